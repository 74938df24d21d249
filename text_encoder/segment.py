"""Cutting notes into segments with character offsets: sentences and token windows.

Two tools, no heavy dependencies:

* :func:`split_sentences` — a regex sentence splitter. Every line break ends a sentence (CodiEsp's
  English files hold one sentence a line); inside a line a sentence ends at ``.``, ``!`` or ``?``
  followed by a space and an upper-case letter, a digit or an opening quote/bracket. Lower case after
  the stop (``500 mg. daily``), decimals (``3.5``), titles (``Dr. Smith``), Latin abbreviations
  (``e.g. Crohn``) and dosing abbreviations (``p.o. Then``) do not end a sentence; a single capital does
  (``hepatitis B. The``), so initials (``J. Smith``) are split. Pieces with no letter at all (the
  stray ``1.`` lines of CodiEsp's machine translation) are dropped.
* :func:`token_windows` / :func:`window_spans` — overlapping windows over a token sequence, so that
  text past a model's 512-token limit is encoded instead of being truncated away.

Example:
    >>> text = "Pain in the right flank.\\nHe took 500 mg. daily. Dr. Smith saw him."
    >>> [text[a:b] for a, b in split_sentences(text)]
    ['Pain in the right flank.', 'He took 500 mg. daily.', 'Dr. Smith saw him.']
    >>> token_windows(10, window=4, stride=3)
    [(0, 4), (3, 7), (6, 10)]
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["ABBREVIATIONS", "split_sentences", "token_windows", "window_spans"]

#: Words (lower case, without the final dot) after which a full stop never ends a sentence.
ABBREVIATIONS: frozenset[str] = frozenset(
    {
        "dr", "drs", "mr", "mrs", "ms", "prof", "sr", "jr", "st",
        "vs", "e.g", "i.e", "eg", "ie", "cf", "approx", "al", "fig", "figs",
        "nr", "ref", "resp", "incl", "esp", "viz",
        "a.m", "p.m", "b.i.d", "t.i.d", "q.i.d", "p.o", "i.v", "i.m", "s.c",
    }
)  # fmt: skip

_LINE = re.compile(r"[^\r\n]+")
# A candidate stop: one or more terminal marks, closing quotes/brackets, then whitespace.
_STOP = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s)")
_WORD_BEFORE = re.compile(r"([A-Za-z][A-Za-z.]*)$")
_LETTER = re.compile(r"[^\W\d_]")


def _is_boundary(line: str, stop_start: int, stop_end: int) -> bool:
    """Whether the stop ``line[stop_start:stop_end]`` ends a sentence."""
    rest = line[stop_end:].lstrip()
    if not rest:
        return False  # the line ends anyway
    nxt = rest[0]
    if not (nxt.isupper() or nxt.isdigit() or nxt in "\"'(\u201c\u2018["):
        return False
    if line[stop_start] != ".":
        return True  # ! and ? always end a sentence before a capital
    m = _WORD_BEFORE.search(line[:stop_start])
    if m is None:
        return True
    # Single letters are not treated as initials: "hepatitis B. The" is commoner in notes than "J. Smith".
    return m.group(1).lower() not in ABBREVIATIONS


def split_sentences(text: str, *, require_letter: bool = True) -> list[tuple[int, int]]:
    """Split a text into sentences, returning character spans.

    Args:
        text: the note.
        require_letter: drop pieces without any letter (``"1."``, ``"--"``).

    Returns:
        ``(start, end)`` spans in order, each stripped of surrounding whitespace, so that
        ``text[start:end]`` is the sentence.
    """
    spans: list[tuple[int, int]] = []

    def add(start: int, end: int) -> None:
        piece = text[start:end]
        lead = len(piece) - len(piece.lstrip())
        trail = len(piece) - len(piece.rstrip())
        start, end = start + lead, end - trail
        if end <= start:
            return
        if require_letter and not _LETTER.search(text, start, end):
            return
        spans.append((start, end))

    for line_match in _LINE.finditer(text):
        line = line_match.group()
        base = line_match.start()
        start = 0
        for stop in _STOP.finditer(line):
            if _is_boundary(line, stop.start(), stop.end()):
                add(base + start, base + stop.end())
                start = stop.end()
        add(base + start, base + len(line))
    return spans


def token_windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Overlapping windows ``[start, end)`` over ``n_tokens`` tokens.

    Windows start every ``stride`` tokens (so consecutive windows overlap by ``window - stride``);
    the last window is moved back to end exactly at ``n_tokens`` so that every token is covered and
    every window but a short text's only one is ``window`` tokens long.

    Args:
        n_tokens: the length of the token sequence.
        window: tokens per window (e.g. 254 = 256 minus the two special tokens).
        stride: tokens between window starts, ``1 <= stride <= window``.

    Returns:
        Token index ranges; ``[]`` for no tokens, ``[(0, n_tokens)]`` when it fits in one window.
    """
    if window < 1 or not 1 <= stride <= window:
        raise ValueError(f"need window >= 1 and 1 <= stride <= window, got window={window}, stride={stride}")
    if n_tokens <= 0:
        return []
    if n_tokens <= window:
        return [(0, n_tokens)]
    starts = list(range(0, n_tokens - window + 1, stride))
    if starts[-1] + window < n_tokens:
        starts.append(n_tokens - window)
    return [(s, s + window) for s in starts]


def window_spans(
    offsets: Sequence[tuple[int, int]], window: int, stride: int, *, base: int = 0
) -> list[tuple[int, int]]:
    """Character spans of overlapping token windows.

    Args:
        offsets: ``(start, end)`` character offsets of each token, as a fast tokenizer's
            ``offset_mapping`` without special tokens.
        window: tokens per window.
        stride: tokens between window starts (see :func:`token_windows`).
        base: added to every offset (the position of the tokenised piece in the whole note).

    Returns:
        ``(start, end)`` character spans, one per window.
    """
    windows = token_windows(len(offsets), window, stride)
    return [(base + offsets[a][0], base + offsets[b - 1][1]) for a, b in windows]
