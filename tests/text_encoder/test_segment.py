"""Sentence splitting with offsets and token windows."""

from __future__ import annotations

import pytest

from text_encoder.segment import split_sentences, token_windows, window_spans


def _pieces(text: str) -> list[str]:
    spans = split_sentences(text)
    return [text[a:b] for a, b in spans]


def test_one_sentence_a_line_and_offsets() -> None:
    text = "First line here.\nSecond line without a stop\n\n  Third, indented.  \n"
    spans = split_sentences(text)
    assert [text[a:b] for a, b in spans] == [
        "First line here.",
        "Second line without a stop",
        "Third, indented.",
    ]
    assert spans[2] == (text.index("Third"), text.index("Third") + len("Third, indented."))


def test_sentence_stops_inside_a_line() -> None:
    assert _pieces("He was admitted. She was not! Why? Because.") == [
        "He was admitted.",
        "She was not!",
        "Why?",
        "Because.",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "He took 500 mg. daily for a week.",  # lower case after the stop
        "Seen by Dr. Smith on Monday.",  # title
        "Autoimmune disease, e.g. Crohn disease, was excluded.",  # Latin abbreviation
        "A mass of 3.5 cm was found.",  # decimal
        "Given 2 g p.o. Then observed.",  # dosing abbreviation
    ],
)
def test_abbreviations_do_not_split(text: str) -> None:
    assert _pieces(text) == [text]


def test_capital_after_a_unit_splits() -> None:
    assert _pieces("He took 500 mg. The fever resolved.") == ["He took 500 mg.", "The fever resolved."]


def test_letterless_pieces_are_dropped_unless_asked() -> None:
    text = "Surgery was performed.\n1.\nHe recovered."
    assert _pieces(text) == ["Surgery was performed.", "He recovered."]
    assert [text[a:b] for a, b in split_sentences(text, require_letter=False)][1] == "1."


def test_crlf_and_blank_text() -> None:
    text = "One.\r\nTwo.\r\n"
    assert _pieces(text) == ["One.", "Two."]
    assert split_sentences("") == []
    assert split_sentences("   \n\n ") == []


def test_quotes_and_brackets_close_a_sentence() -> None:
    assert _pieces('She said "no." Then left (quietly.) After that, nothing.') == [
        'She said "no."',
        "Then left (quietly.)",
        "After that, nothing.",
    ]


@pytest.mark.parametrize(
    ("n", "window", "stride", "expected"),
    [
        (0, 4, 2, []),
        (3, 4, 2, [(0, 3)]),
        (4, 4, 2, [(0, 4)]),  # exactly one window, no second
        (5, 4, 2, [(0, 4), (1, 5)]),  # last window moved back to end at n
        (10, 4, 3, [(0, 4), (3, 7), (6, 10)]),  # windows fit exactly
        (11, 4, 2, [(0, 4), (2, 6), (4, 8), (6, 10), (7, 11)]),
        (8, 4, 4, [(0, 4), (4, 8)]),  # no overlap
    ],
)
def test_token_windows(n: int, window: int, stride: int, expected: list[tuple[int, int]]) -> None:
    got = token_windows(n, window, stride)
    assert got == expected
    covered = {i for a, b in got for i in range(a, b)}
    assert covered == set(range(n))
    assert all(b - a == min(window, n) for a, b in got)


@pytest.mark.parametrize(("window", "stride"), [(0, 1), (4, 0), (4, 5)])
def test_token_windows_rejects_bad_arguments(window: int, stride: int) -> None:
    with pytest.raises(ValueError, match="stride"):
        token_windows(10, window, stride)


def test_window_spans_map_tokens_to_characters() -> None:
    text = "aa bb cc dd ee"
    offsets = [(0, 2), (3, 5), (6, 8), (9, 11), (12, 14)]
    spans = window_spans(offsets, window=3, stride=2)
    assert spans == [(0, 8), (6, 14)]
    assert [text[a:b] for a, b in spans] == ["aa bb cc", "cc dd ee"]
    assert window_spans(offsets, window=3, stride=2, base=100) == [(100, 108), (106, 114)]
