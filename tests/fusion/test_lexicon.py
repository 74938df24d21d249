"""The dictionary matcher: coverage, best sentence, word rule, saving."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusion.lexicon import DEFAULT_STOPWORDS, Lexicon

NAMES = [
    ["Calculus of kidney", "Renal stone", "Nephrolithiasis NOS"],  # 0
    ["Essential (primary) hypertension"],  # 1
    ["Hydronephrosis with renal and ureteral calculous obstruction"],  # 2
    [],  # 3: no names
    ["Other specified disorders"],  # 4: stop words only: never matches
]


@pytest.fixture(scope="module")
def lex() -> Lexicon:
    return Lexicon(NAMES)


def test_full_and_partial_coverage_with_the_best_sentence(lex: Lexicon) -> None:
    cov, best = lex.match(["No fever.", "Ultrasound showed a calculus in the kidney.", "He is hypertensive."])
    assert cov[0] == pytest.approx(1.0) and best[0] == 1
    assert (
        0 < cov[1] < 1 and best[1] == 2
    )  # hypertensive/hypertension by the prefix rule; "essential" missing
    assert cov[2] == 0  # "calculous" and "calculus" differ in their first 8 characters
    assert cov[3] == 0 and best[3] == -1 and cov[4] == 0 and best[4] == -1
    assert cov.dtype == np.float32 and best.dtype == np.int32 and cov.shape == (5,)


def test_rare_words_weigh_more_than_common_ones(lex: Lexicon) -> None:
    rare, _ = lex.match(["hydronephrosis"])
    common, _ = lex.match(["renal"])
    assert rare[2] > common[2] > 0


def test_the_best_name_and_the_first_best_sentence_win(lex: Lexicon) -> None:
    cov, best = lex.match(["renal stone", "renal stone again"])
    assert cov[0] == pytest.approx(1.0) and best[0] == 0  # ties keep the earlier sentence
    words_spread, _ = lex.match(["stone", "renal"])
    assert words_spread[0] < 1.0  # a name must be covered within one sentence


def test_min_coverage_drops_weak_matches(lex: Lexicon) -> None:
    cov, best = lex.match(["hypertension"], min_coverage=0.99)
    assert cov[1] == 0 and best[1] == -1
    cov, _ = lex.match(["essential primary hypertension"], min_coverage=0.99)
    assert cov[1] == pytest.approx(1.0)


def test_many_sentences_are_matched_in_blocks() -> None:
    lex = Lexicon(NAMES)
    sentences = ["nothing here"] * 300 + ["renal stone"]
    cov, best = lex.match(sentences)
    assert cov[0] == pytest.approx(1.0) and best[0] == len(sentences) - 1


def test_tokens_use_the_prefix_and_the_stop_list() -> None:
    lex = Lexicon([["x"]], token_prefix=4)
    assert lex.tokens("Other Fractures of the FEMUR, type 2") == ["frac", "femu"]
    assert "other" in DEFAULT_STOPWORDS and "2" not in lex.tokens("2")  # one-character words are dropped
    with pytest.raises(ValueError, match="token_prefix"):
        Lexicon([["x"]], token_prefix=0)


def test_empty_lexicon_and_empty_note() -> None:
    empty = Lexicon([[], []])
    cov, best = empty.match(["renal stone"])
    assert cov.tolist() == [0, 0] and best.tolist() == [-1, -1]
    cov, best = Lexicon(NAMES).match([])
    assert not cov.any() and (best == -1).all()


def test_round_trip_through_json(lex: Lexicon) -> None:
    codes = [f"ICD10CM:X{i}" for i in range(len(NAMES))]
    data = json.loads(json.dumps(lex.to_dict(codes)))
    assert data["names"]["ICD10CM:X0"][1] == "Renal stone" and "ICD10CM:X3" not in data["names"]
    again = Lexicon.from_dict(data, codes)
    note = ["Renal stone and essential hypertension."]
    assert np.array_equal(again.match(note)[0], lex.match(note)[0])
    # names are stored by code: another label order (or an unknown code) is fine
    reordered = Lexicon.from_dict(data, [codes[1], codes[0], "ICD10CM:NEW"])
    cov, _ = reordered.match(note)
    assert cov[1] == pytest.approx(1.0) and cov[2] == 0
    with pytest.raises(ValueError, match="4 labels for a lexicon of 5 rows"):
        lex.to_dict(codes[:4])
    with pytest.raises(ValueError, match="format version"):
        Lexicon.from_dict({**data, "format_version": 99}, codes)
