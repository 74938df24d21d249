"""Metrics on small hand-computed examples (each would fail on an off-by-one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kgcode.metrics import (
    DEFAULT_BUCKETS,
    bucket_metrics,
    evaluate,
    macro_f1,
    mean_average_precision,
    micro_prf,
    precision_at_k,
    recall_at_k,
    tune_threshold,
)

# Three notes, five codes. Column 4 is never gold and never predicted at 0.5.
#   note 0: ranking by score = cols 0, 1, 2, 3, 4 -> gold flags [1, 0, 1, 0, 0]
#   note 1: ranking by score = cols 1, 2, 3, 0, 4 -> gold flags [0, 0, 1, 0, 0]
#   note 2: no gold code (left out of ranking metrics)
SCORES = np.array(
    [
        [0.9, 0.8, 0.7, 0.1, 0.05],
        [0.2, 0.6, 0.4, 0.3, 0.01],
        [0.9, 0.1, 0.1, 0.1, 0.1],
    ]
)
GOLD = np.array(
    [
        [1, 0, 1, 0, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0],
    ]
)


def test_average_precision_of_a_ranked_list() -> None:
    # [1, 0, 1]: precision 1/1 at rank 1 and 2/3 at rank 3 -> (1 + 2/3) / 2
    assert mean_average_precision([[0.9, 0.8, 0.7]], [[1, 0, 1]]) == pytest.approx((1 + 2 / 3) / 2)
    # gold first and last of four: (1/1 + 2/4) / 2
    assert mean_average_precision([[4, 3, 2, 1]], [[1, 0, 0, 1]]) == pytest.approx((1 + 2 / 4) / 2)


def test_map_excludes_notes_without_gold() -> None:
    ap0 = (1 / 1 + 2 / 3) / 2
    ap1 = 1 / 3
    assert mean_average_precision(SCORES, GOLD) == pytest.approx((ap0 + ap1) / 2)
    # counting note 2 as AP 0 would give (ap0 + ap1) / 3
    assert mean_average_precision(SCORES[:2], GOLD[:2]) == pytest.approx((ap0 + ap1) / 2)


def test_map_cut_at_k_keeps_the_gold_divisor() -> None:
    # k=2: note 0 finds one of two gold codes at rank 1 -> 1/2; note 1 finds none in 2 -> 0
    assert mean_average_precision(SCORES, GOLD, k=2) == pytest.approx((0.5 + 0.0) / 2)
    # k=3 already finds everything
    assert mean_average_precision(SCORES, GOLD, k=3) == pytest.approx(mean_average_precision(SCORES, GOLD))


def test_map_equals_the_running_precision_definition_on_random_notes() -> None:
    # MAP is computed from the gold codes' ranks alone; check it against the textbook running
    # precision over the whole ranked list, with many ties, notes without gold and cuts at k
    rng = np.random.default_rng(0)
    for _ in range(50):
        n, m = int(rng.integers(1, 12)), int(rng.integers(1, 40))
        scores = rng.integers(0, 4, (n, m)).astype(float)
        gold = rng.random((n, m)) < rng.random()
        for k in (None, 1, 5, 100):
            aps = []
            for s, g in zip(scores, gold, strict=True):
                if not g.any():
                    continue
                ranked = g[np.argsort(-s, kind="stable")][: k or m]
                hits = np.cumsum(ranked)
                aps.append(sum(hits[i] / (i + 1) for i in np.flatnonzero(ranked)) / g.sum())
            want = float(np.mean(aps)) if aps else 0.0
            assert mean_average_precision(scores, gold, k=k) == pytest.approx(want, abs=1e-12)


def test_ties_keep_column_order() -> None:
    assert mean_average_precision([[0.5, 0.5]], [[0, 1]]) == pytest.approx(1 / 2)
    assert mean_average_precision([[0.5, 0.5]], [[1, 0]]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (1, (1 / 1 + 0 / 1) / 2),
        (2, (1 / 2 + 0 / 2) / 2),
        (3, (2 / 3 + 1 / 3) / 2),
        (4, (2 / 4 + 1 / 4) / 2),
        (8, (2 / 8 + 1 / 8) / 2),  # longer than the label set: still divided by k
    ],
)
def test_precision_at_k(k: int, expected: float) -> None:
    assert precision_at_k(SCORES, GOLD, k) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("k", "expected"),
    [
        (1, (1 / 2 + 0 / 1) / 2),
        (2, (1 / 2 + 0 / 1) / 2),
        (3, (2 / 2 + 1 / 1) / 2),
        (5, 1.0),
    ],
)
def test_recall_at_k(k: int, expected: float) -> None:
    assert recall_at_k(SCORES, GOLD, k) == pytest.approx(expected)


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        precision_at_k(SCORES, GOLD, 0)


def test_micro_prf_at_threshold() -> None:
    # predicted at >= 0.5: note 0 cols 0,1,2; note 1 col 1; note 2 col 0
    # TP = 2 (note 0 cols 0, 2), FP = 3, FN = 1 (note 1 col 3)
    p, r, f1 = micro_prf(SCORES, GOLD, 0.5)
    assert (p, r) == (pytest.approx(2 / 5), pytest.approx(2 / 3))
    assert f1 == pytest.approx(2 * 2 / (2 * 2 + 3 + 1))


def test_threshold_is_inclusive() -> None:
    # at 0.7 note 0 col 2 (score 0.7) is predicted: TP 2, FP 2 (note 0 col 1, note 2 col 0)
    assert micro_prf(SCORES, GOLD, 0.7)[0] == pytest.approx(2 / 4)
    # just above, it is not: TP 1, FP 2
    assert micro_prf(SCORES, GOLD, 0.7000001)[0] == pytest.approx(1 / 3)


def test_micro_prf_top_k_cap() -> None:
    # top_k=1 at 0.5: note 0 col 0 (TP), note 1 col 1 (FP), note 2 col 0 (FP)
    p, r, f1 = micro_prf(SCORES, GOLD, 0.5, top_k=1)
    assert (p, r, f1) == (pytest.approx(1 / 3), pytest.approx(1 / 3), pytest.approx(2 / (2 + 2 + 2)))


def test_micro_with_nothing_predicted_is_zero() -> None:
    assert micro_prf(SCORES, GOLD, 2.0) == (0.0, 0.0, 0.0)


def test_macro_f1_both_conventions() -> None:
    # per code at 0.5: col 0: TP 1, FP 1 -> 2/3; col 1: FP 2 -> 0; col 2: TP 1 -> 1;
    # col 3: FN 1 -> 0; col 4: nothing -> 0 (all codes) or left out (present only)
    per_code = [2 / 3, 0.0, 1.0, 0.0]
    assert macro_f1(SCORES, GOLD, 0.5) == pytest.approx(sum(per_code) / 5)
    assert macro_f1(SCORES, GOLD, 0.5, present_only=True) == pytest.approx(sum(per_code) / 4)


def test_tune_threshold_finds_the_best_grid_point() -> None:
    scores = [[0.9, 0.6, 0.4], [0.8, 0.3, 0.2]]
    gold = [[1, 1, 0], [1, 0, 0]]
    # t in (0.4, 0.6]: predicts 0.9, 0.6, 0.8 -> all three gold, F1 = 1
    t, f1 = tune_threshold(scores, gold, thresholds=[0.3, 0.5, 0.6, 0.7])
    assert (t, f1) == (0.5, pytest.approx(1.0))  # ties -> lowest threshold
    t, f1 = tune_threshold(scores, gold, thresholds=[0.7, 0.85])
    assert t == 0.7 and f1 == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    t, f1 = tune_threshold(scores, gold)  # default grid 0.01..0.99
    assert 0.4 < t <= 0.6 and f1 == pytest.approx(1.0)
    assert t == pytest.approx(0.41)


def test_tune_threshold_agrees_with_micro_prf_and_handles_logits() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20, 30))
    gold = rng.random((20, 30)) < 0.1
    t, f1 = tune_threshold(logits, gold)
    assert f1 == pytest.approx(micro_prf(logits, gold, t)[2])
    grid = np.linspace(-3, 3, 61)
    assert f1 >= max(micro_prf(logits, gold, g)[2] for g in grid) - 1e-12
    t5, f5 = tune_threshold(logits, gold, top_k=5)
    assert f5 == pytest.approx(micro_prf(logits, gold, t5, top_k=5)[2])


def test_bucket_metrics() -> None:
    train_counts = np.array([0, 3, 6, 21, 5])
    # unseen: col 0; 1-5: cols 1, 4; 6-20: col 2; >20: col 3
    out = bucket_metrics(SCORES, GOLD, train_counts)
    assert list(out) == [label for _, _, label in DEFAULT_BUCKETS]
    # unseen (col 0): TP 1 (note 0), FP 1 (note 2) -> F1 2/3; its gold mention is at rank 1 -> r@10 = 1
    assert out["unseen"] == {"f1": pytest.approx(2 / 3), "r@10": 1.0, "n": 1, "n_codes": 1}
    # 1-5 (cols 1, 4): FP 2, no gold -> F1 0, r@10 undefined
    assert out["1-5"] == {"f1": 0.0, "r@10": None, "n": 0, "n_codes": 2}
    assert out["6-20"]["f1"] == pytest.approx(1.0) and out["6-20"]["n"] == 1
    assert out[">20"]["f1"] == 0.0 and out[">20"]["n"] == 1


def test_bucket_boundaries_are_inclusive() -> None:
    scores = np.array([[0.9, 0.8, 0.7, 0.6]])
    gold = np.ones((1, 4), dtype=int)
    out = bucket_metrics(scores, gold, [0, 1, 5, 6])
    assert [out[b]["n"] for b in ("unseen", "1-5", "6-20", ">20")] == [1, 2, 1, 0]
    out = bucket_metrics(scores, gold, [20, 21, 0, 0])
    assert [out[b]["n"] for b in ("unseen", "1-5", "6-20", ">20")] == [2, 0, 1, 1]


def test_bucket_recall_at_k_counts_ranks_over_all_codes() -> None:
    # 12 codes; the bucket's gold code sits at rank 11 -> outside the top 10
    scores = np.arange(12, 0, -1, dtype=float)[None, :]
    gold = np.zeros((1, 12), dtype=int)
    gold[0, 10] = 1  # rank 11
    gold[0, 9] = 1  # rank 10
    counts = np.full(12, 50)
    counts[10] = 0
    out = bucket_metrics(scores, gold, counts)
    assert out["unseen"]["r@10"] == 0.0
    assert out[">20"]["r@10"] == 1.0


def test_bucket_counts_from_a_mapping() -> None:
    codes = ["ICD10CM:A", "ICD10CM:B", "ICD10CM:C", "ICD10CM:D", "ICD10CM:E"]
    counts = {"ICD10CM:B": 3, "ICD10CM:C": 6, "ICD10CM:D": 21, "ICD10CM:E": 5}  # A unseen
    assert bucket_metrics(SCORES, GOLD, counts, codes=codes) == bucket_metrics(SCORES, GOLD, [0, 3, 6, 21, 5])
    with pytest.raises(ValueError, match="codes"):
        bucket_metrics(SCORES, GOLD, counts)
    with pytest.raises(ValueError, match="4 entries for 5 codes"):
        bucket_metrics(SCORES, GOLD, [0, 1, 2, 3])


def test_evaluate_keys_and_consistency() -> None:
    out = evaluate(torch.tensor(SCORES), torch.tensor(GOLD), train_counts=[0, 3, 6, 21, 5])
    expected_keys = {
        "map", "micro_precision", "micro_recall", "micro_f1", "macro_f1", "macro_f1_present",
        "p@5", "p@8", "p@15", "r@10", "r@50", "buckets",
    }  # fmt: skip
    assert expected_keys <= set(out)
    assert out["map"] == pytest.approx(mean_average_precision(SCORES, GOLD))
    assert (out["micro_precision"], out["micro_recall"], out["micro_f1"]) == pytest.approx(
        micro_prf(SCORES, GOLD, 0.5)
    )
    assert out["macro_f1"] == pytest.approx(macro_f1(SCORES, GOLD))
    assert out["macro_f1_present"] == pytest.approx(macro_f1(SCORES, GOLD, present_only=True))
    assert out["p@5"] == pytest.approx((2 / 5 + 1 / 5) / 2)
    assert out["p@8"] == pytest.approx((2 / 8 + 1 / 8) / 2)
    assert out["p@15"] == pytest.approx((2 / 15 + 1 / 15) / 2)
    assert out["r@10"] == out["r@50"] == pytest.approx(1.0)
    assert out["buckets"] == bucket_metrics(SCORES, GOLD, [0, 3, 6, 21, 5])
    assert (out["n_notes"], out["n_notes_with_gold"], out["threshold"]) == (3, 2, 0.5)
    assert evaluate(SCORES, GOLD)["buckets"] == {}


def test_input_checks() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        micro_prf(SCORES, GOLD[:, :4])
    with pytest.raises(ValueError, match="2-D"):
        micro_prf(SCORES[0], GOLD[0])
    with pytest.raises(ValueError, match="only 0 and 1"):
        micro_prf(SCORES, GOLD * 2)
    bad = SCORES.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        micro_prf(bad, GOLD)


def test_minus_infinity_marks_unreachable_codes() -> None:
    scores = np.array([[0.9, -np.inf, 0.2]])
    gold = np.array([[0, 1, 1]])
    # ranking: col 0, col 2, col 1 -> flags [0, 1, 1]: AP = (1/2 + 2/3) / 2
    assert mean_average_precision(scores, gold) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert recall_at_k(scores, gold, 2) == pytest.approx(1 / 2)
