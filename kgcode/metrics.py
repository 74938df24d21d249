"""Evaluation metrics for multi-label coding, on a score matrix and a gold 0/1 matrix.

All functions take ``scores`` (higher = more likely) and ``gold`` (1 where the code is a gold code
of the note), both of shape ``(n_notes, n_codes)``, as numpy arrays, torch tensors or nested lists.

Conventions:

* Ranking: codes are sorted by descending score; ties keep column order (stable sort), so results
  are deterministic. ``-inf`` marks a code the model cannot predict.
* Ranking metrics (:func:`mean_average_precision`, :func:`precision_at_k`, :func:`recall_at_k`)
  average over notes that have at least one gold code; notes with none are left out.
* Threshold metrics predict a code when ``score >= threshold`` (optionally only among a note's
  ``top_k`` codes).
* Build the label set to include every gold code of the evaluated notes (give unreachable codes a
  score of ``-inf``): a gold code outside the matrix cannot be counted as missed.

MAP follows CodiEsp's evaluation (trec_eval's ``map`` through trectools): per note, the mean over
its gold codes of the precision at the rank where each is found, i.e.
``AP = (1/|G|) * sum_{r: code at rank r is gold} P@r``; with ``k`` the ranking is cut at ``k``
(trec_eval's 1,000 by default) and gold codes ranked below count as precision 0.

Example:
    >>> mean_average_precision([[0.9, 0.8, 0.7]], [[1, 0, 1]])  # (1 + 2/3) / 2
    0.8333333333333333
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_BUCKETS",
    "bucket_metrics",
    "evaluate",
    "macro_f1",
    "mean_average_precision",
    "micro_prf",
    "precision_at_k",
    "recall_at_k",
    "tune_threshold",
]

logger = logging.getLogger(__name__)

#: Training-frequency buckets ``(low, high, label)``, inclusive; ``high=None`` has no upper bound.
DEFAULT_BUCKETS: tuple[tuple[int, int | None, str], ...] = (
    (0, 0, "unseen"),
    (1, 5, "1-5"),
    (6, 20, "6-20"),
    (21, None, ">20"),
)


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch
        x = x.detach().cpu()
        if str(x.dtype) == "torch.bfloat16":
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _check(scores: Any, gold: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to ``(float64 scores, bool gold)``."""
    s = _to_numpy(scores).astype(np.float64, copy=False)
    g = _to_numpy(gold)
    if s.ndim != 2 or g.ndim != 2:
        raise ValueError(f"scores and gold must be 2-D (n_notes, n_codes), got {s.shape} and {g.shape}")
    if s.shape != g.shape:
        raise ValueError(f"scores {s.shape} and gold {g.shape} differ in shape")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    if g.dtype != np.bool_:
        if not np.isin(g, (0, 1)).all():
            raise ValueError("gold must hold only 0 and 1")
        g = g.astype(bool)
    return s, g


@dataclass
class _Ranked:
    """Gold flags in rank order, shared by the ranking metrics."""

    rel: np.ndarray  # (n, m) bool: rel[i, r] = code at rank r of note i is gold
    n_gold: np.ndarray  # (n,) gold codes per note
    order: np.ndarray  # (n, m) column index at each rank

    @classmethod
    def of(cls, s: np.ndarray, g: np.ndarray) -> _Ranked:
        order = np.argsort(-s, axis=1, kind="stable")
        rel = np.take_along_axis(g, order, axis=1)
        return cls(rel=rel, n_gold=g.sum(axis=1), order=order)

    def top_k_mask(self, k: int) -> np.ndarray:
        """``(n, m)`` bool: the code is among the note's ``k`` best."""
        mask = np.zeros(self.order.shape, dtype=bool)
        np.put_along_axis(mask, self.order[:, : max(k, 0)], True, axis=1)
        return mask


def _check_k(k: int) -> int:
    if int(k) != k or k < 1:
        raise ValueError(f"k={k!r}: expected a positive integer")
    return int(k)


def _mean_over_gold_notes(values: np.ndarray, n_gold: np.ndarray) -> float:
    keep = n_gold > 0
    if not keep.any():
        logger.warning("no note has a gold code: ranking metrics are 0")
        return 0.0
    return float(values[keep].mean())


def _map(r: _Ranked, k: int | None) -> float:
    # from the gold codes' ranks alone: the j-th gold code of a note, at rank p (1-based), adds
    # j / p to its AP (no note x code matrix of running precisions: this runs on ~98k codes a note)
    rel = r.rel if k is None else r.rel[:, :k]
    note, col = np.nonzero(rel)  # row-major: each note's gold ranks in increasing order
    start = np.searchsorted(note, np.arange(rel.shape[0]))
    j = np.arange(1, len(note) + 1) - start[note]
    ap = np.bincount(note, j / (col + 1.0), minlength=rel.shape[0]) / np.maximum(r.n_gold, 1)
    return _mean_over_gold_notes(ap, r.n_gold)


def _hits_at_k(r: _Ranked, k: int) -> np.ndarray:
    return r.rel[:, :k].sum(axis=1)


def mean_average_precision(scores: Any, gold: Any, *, k: int | None = None) -> float:
    """CodiEsp's MAP: mean over notes (with gold) of average precision over the ranked codes.

    Args:
        scores: code scores.
        gold: 0/1 gold codes.
        k: cut the ranking at ``k`` codes (gold codes below count 0; the divisor stays the
            number of gold codes), ``None`` for the full ranking.

    Returns:
        MAP in ``[0, 1]``.

    Shapes:
        scores, gold: ``(n_notes, n_codes)``.
    """
    s, g = _check(scores, gold)
    return _map(_Ranked.of(s, g), None if k is None else _check_k(k))


def precision_at_k(scores: Any, gold: Any, k: int) -> float:
    """Mean over notes (with gold) of (gold codes among the top ``k``) / ``k``.

    Args:
        scores: code scores.
        gold: 0/1 gold codes.
        k: list length; the divisor is ``k`` even when fewer codes exist.

    Returns:
        P@k in ``[0, 1]``.

    Shapes:
        scores, gold: ``(n_notes, n_codes)``.
    """
    s, g = _check(scores, gold)
    k = _check_k(k)
    r = _Ranked.of(s, g)
    return _mean_over_gold_notes(_hits_at_k(r, k) / k, r.n_gold)


def recall_at_k(scores: Any, gold: Any, k: int) -> float:
    """Mean over notes (with gold) of (gold codes among the top ``k``) / (gold codes).

    Args:
        scores: code scores.
        gold: 0/1 gold codes.
        k: list length.

    Returns:
        R@k in ``[0, 1]``.

    Shapes:
        scores, gold: ``(n_notes, n_codes)``.
    """
    s, g = _check(scores, gold)
    k = _check_k(k)
    r = _Ranked.of(s, g)
    return _mean_over_gold_notes(_hits_at_k(r, k) / np.maximum(r.n_gold, 1), r.n_gold)


def _predict(s: np.ndarray, threshold: float, top_k: int | None, r: _Ranked | None = None) -> np.ndarray:
    pred = s >= threshold
    if top_k is not None:
        r = r or _Ranked.of(s, np.zeros(s.shape, dtype=bool))
        pred &= r.top_k_mask(_check_k(top_k))
    return pred


def _f1(tp: float, fp: float, fn: float) -> float:
    denom = 2 * tp + fp + fn
    return float(2 * tp / denom) if denom else 0.0


def _micro(pred: np.ndarray, g: np.ndarray) -> tuple[float, float, float]:
    tp = float((pred & g).sum())
    n_pred, n_gold = float(pred.sum()), float(g.sum())
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    return precision, recall, _f1(tp, n_pred - tp, n_gold - tp)


def micro_prf(
    scores: Any, gold: Any, threshold: float = 0.5, *, top_k: int | None = None
) -> tuple[float, float, float]:
    """Micro-averaged precision, recall and F1 (pooled over all note/code cells).

    Args:
        scores: code scores.
        gold: 0/1 gold codes.
        threshold: predict where ``score >= threshold``.
        top_k: also require the code to be among the note's ``top_k`` best.

    Returns:
        ``(precision, recall, f1)``; 0 where a ratio is 0/0.

    Shapes:
        scores, gold: ``(n_notes, n_codes)``.
    """
    s, g = _check(scores, gold)
    return _micro(_predict(s, threshold, top_k), g)


def _per_code_f1(pred: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tp = (pred & g).sum(axis=0)
    fp = (pred & ~g).sum(axis=0)
    fn = (~pred & g).sum(axis=0)
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros(tp.shape, dtype=np.float64), where=denom > 0)
    return f1, denom > 0


def macro_f1(
    scores: Any,
    gold: Any,
    threshold: float = 0.5,
    *,
    top_k: int | None = None,
    present_only: bool = False,
) -> float:
    """Macro-averaged F1: the mean of per-code F1.

    Two conventions: over every code of the label set (a code neither gold nor predicted in the
    evaluated notes scores 0), or, with ``present_only``, over codes that are gold or predicted in
    at least one evaluated note (Edin et al., SIGIR 2023).

    Args:
        scores: code scores.
        gold: 0/1 gold codes.
        threshold: predict where ``score >= threshold``.
        top_k: also require the code to be among the note's ``top_k`` best.
        present_only: average only over codes present in gold or predictions.

    Returns:
        Macro-F1 in ``[0, 1]``.

    Shapes:
        scores, gold: ``(n_notes, n_codes)``.
    """
    s, g = _check(scores, gold)
    f1, present = _per_code_f1(_predict(s, threshold, top_k), g)
    return _macro(f1, present, present_only)


def _macro(f1: np.ndarray, present: np.ndarray, present_only: bool) -> float:
    if present_only:
        return float(f1[present].mean()) if present.any() else 0.0
    return float(f1.mean()) if f1.size else 0.0


def _default_thresholds(s: np.ndarray) -> np.ndarray:
    finite = s[np.isfinite(s)]
    if finite.size == 0:
        return np.array([0.5])
    if finite.min() >= 0.0 and finite.max() <= 1.0:
        return np.round(np.arange(1, 100) / 100.0, 2)
    return np.unique(np.quantile(finite, np.linspace(0.0, 1.0, 201)))


def tune_threshold(
    scores: Any,
    gold: Any,
    *,
    thresholds: Sequence[float] | np.ndarray | None = None,
    top_k: int | None = None,
) -> tuple[float, float]:
    """The threshold that maximises micro-F1 (tune it on dev, never on test).

    Args:
        scores: code scores.
        gold: 0/1 gold codes.
        thresholds: the grid; default ``0.01, 0.02, ..., 0.99`` when scores lie in ``[0, 1]``,
            else 201 quantiles of the scores.
        top_k: only a note's ``top_k`` best codes may be predicted.

    Returns:
        ``(threshold, micro_f1)``; on ties, the lowest threshold.

    Shapes:
        scores, gold: ``(n_notes, n_codes)``.
    """
    s, g = _check(scores, gold)
    if top_k is not None:
        s = np.where(_Ranked.of(s, g).top_k_mask(_check_k(top_k)), s, -np.inf)
    grid = np.sort(np.asarray(thresholds if thresholds is not None else _default_thresholds(s), dtype=float))
    if grid.size == 0:
        raise ValueError("empty threshold grid")
    flat = np.sort(s.ravel())
    gold_scores = np.sort(s[g])
    n_pred = flat.size - np.searchsorted(flat, grid, side="left")  # scores >= t
    tp = gold_scores.size - np.searchsorted(gold_scores, grid, side="left")
    denom = n_pred + gold_scores.size
    f1 = np.divide(2.0 * tp, denom, out=np.zeros(grid.shape), where=denom > 0)
    best = int(np.argmax(f1))
    return float(grid[best]), float(f1[best])


def _train_counts(train_counts: Any, codes: Sequence[str] | None, n_codes: int) -> np.ndarray:
    if isinstance(train_counts, Mapping):
        if codes is None:
            raise ValueError("train_counts is a mapping: pass `codes` (the id of each column)")
        counts = np.array([int(train_counts.get(c, 0)) for c in codes])
    else:
        counts = _to_numpy(train_counts).astype(np.int64).ravel()
    if counts.shape != (n_codes,):
        raise ValueError(f"train_counts has {counts.shape[0]} entries for {n_codes} codes")
    return counts


def _buckets(
    s: np.ndarray,
    g: np.ndarray,
    counts: np.ndarray,
    buckets: Sequence[tuple[int, int | None, str]],
    pred: np.ndarray,
    r: _Ranked,
    k: int,
) -> dict[str, dict[str, Any]]:
    in_top = r.top_k_mask(k)
    out: dict[str, dict[str, Any]] = {}
    for low, high, label in buckets:
        cols = (counts >= low) & (counts <= (np.inf if high is None else high))
        gb, pb = g[:, cols], pred[:, cols]
        tp = int((gb & pb).sum())
        n = int(gb.sum())
        fp, fn = int(pb.sum()) - tp, n - tp
        hits = int((gb & in_top[:, cols]).sum())
        out[label] = {
            "f1": _f1(tp, fp, fn) if (tp + fp + fn) else None,
            f"r@{k}": hits / n if n else None,
            "n": n,
            "n_codes": int(cols.sum()),
        }
    return out


def bucket_metrics(
    scores: Any,
    gold: Any,
    train_counts: Any,
    buckets: Sequence[tuple[int, int | None, str]] = DEFAULT_BUCKETS,
    *,
    codes: Sequence[str] | None = None,
    threshold: float = 0.5,
    top_k: int | None = None,
    k: int = 10,
) -> dict[str, dict[str, Any]]:
    """Metrics per training-frequency bucket of codes (how the model does on rare and unseen codes).

    For the codes (columns) whose training count lies in a bucket:

    * ``f1``: micro-F1 over those columns at ``threshold`` (``None`` when nothing is gold or predicted);
    * ``r@10``: of the bucket's gold mentions, the share ranked in their note's top ``k`` over *all*
      codes (pooled over mentions; ``None`` when ``n == 0``);
    * ``n``: gold mentions (note, code) in the bucket; ``n_codes``: columns in the bucket.

    Args:
        scores: code scores.
        gold: 0/1 gold codes.
        train_counts: training count of each column (array-like ``(n_codes,)``), or a mapping from
            code id to count together with ``codes``.
        buckets: ``(low, high, label)``, inclusive bounds, ``high=None`` for no upper bound.
        codes: the id of each column (only with a mapping).
        threshold: predict where ``score >= threshold``.
        top_k: also require predictions to be among the note's ``top_k`` best.
        k: the recall cut-off (the key is ``f"r@{k}"``).

    Returns:
        ``{label: {"f1", "r@10", "n", "n_codes"}}`` in bucket order.

    Shapes:
        scores, gold: ``(n_notes, n_codes)``; train_counts: ``(n_codes,)``.
    """
    s, g = _check(scores, gold)
    counts = _train_counts(train_counts, codes, s.shape[1])
    r = _Ranked.of(s, g)
    return _buckets(s, g, counts, buckets, _predict(s, threshold, top_k, r), r, _check_k(k))


def evaluate(
    scores: Any,
    gold: Any,
    *,
    threshold: float = 0.5,
    top_k: int | None = None,
    train_counts: Any = None,
    codes: Sequence[str] | None = None,
    buckets: Sequence[tuple[int, int | None, str]] = DEFAULT_BUCKETS,
) -> dict[str, Any]:
    """All metrics at once (the ranking is computed once).

    Args:
        scores: code scores.
        gold: 0/1 gold codes.
        threshold: decision threshold of the threshold metrics (tune it on dev with
            :func:`tune_threshold`).
        top_k: only a note's ``top_k`` best codes may be predicted.
        train_counts: training count per code, for ``buckets`` (see :func:`bucket_metrics`);
            ``None`` gives ``buckets == {}``.
        codes: column ids, when ``train_counts`` is a mapping.
        buckets: the frequency buckets.

    Returns:
        ``map``, ``micro_precision``, ``micro_recall``, ``micro_f1``, ``macro_f1`` (all codes),
        ``macro_f1_present`` (codes gold or predicted), ``p@5``, ``p@8``, ``p@15``, ``r@10``,
        ``r@50``, ``buckets``, plus ``threshold``, ``n_notes`` and ``n_notes_with_gold``.

    Shapes:
        scores, gold: ``(n_notes, n_codes)``.
    """
    s, g = _check(scores, gold)
    r = _Ranked.of(s, g)
    pred = _predict(s, threshold, top_k, r)
    precision, recall, f1 = _micro(pred, g)
    per_code, present = _per_code_f1(pred, g)
    out: dict[str, Any] = {
        "map": _map(r, None),
        "micro_precision": precision,
        "micro_recall": recall,
        "micro_f1": f1,
        "macro_f1": _macro(per_code, present, False),
        "macro_f1_present": _macro(per_code, present, True),
    }
    for k in (5, 8, 15):
        out[f"p@{k}"] = _mean_over_gold_notes(_hits_at_k(r, k) / k, r.n_gold)
    for k in (10, 50):
        out[f"r@{k}"] = _mean_over_gold_notes(_hits_at_k(r, k) / np.maximum(r.n_gold, 1), r.n_gold)
    out["buckets"] = (
        {}
        if train_counts is None
        else _buckets(s, g, _train_counts(train_counts, codes, s.shape[1]), buckets, pred, r, 10)
    )
    out["threshold"] = float(threshold)
    out["n_notes"] = int(s.shape[0])
    out["n_notes_with_gold"] = int((r.n_gold > 0).sum())
    return out
