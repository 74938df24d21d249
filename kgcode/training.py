"""Training a :class:`~kgcode.coder.Coder`: contrastive alignment, guideline contrast, multi-label loss.

:func:`train` (keyword-only) runs three objectives, in the spirit of the references of issue 3:

1. **Contrastive code-text alignment** (SapBERT / NoteContrast style), ``pretrain_epochs`` epochs
   before the notes: anchors are texts that name a code -- the DO / Mondo concepts linked to it
   (``xref``; their label and synonyms), its ICD-9-CM GEM equivalents (their titles), its parent's
   text and, from the training notes, the sentence that best matches each gold code -- and the
   positive is the code. InfoNCE over in-batch codes plus graph-mined hard negatives (siblings and
   ``excludes1``/``excludes2`` targets). The scores are the supervised head's attention
   (``key . query``) and output (``value . out``) products, so this pre-trains exactly what the
   label attention uses, for every code the graph reaches, not only the codes seen in notes.
2. **GKI-style guideline contrast**: for each training note a synthetic *guideline* is built from
   its gold codes' texts (title; synonyms; parent titles) and their parents' texts; the supervised
   head attends over it as if it were a note, and the per-code evidence vectors of note and
   guideline are aligned (InfoNCE over the gold codes of the batch).
3. **Multi-label loss** (asymmetric loss, Ridnik et al. 2021, or BCE) over a candidate set per batch:
   the gold codes, hard negatives from the zero-shot ranking, graph neighbours (siblings) of the
   gold codes and random codes, so a step never touches all ~98,000 codes.

The text encoder is frozen (MiniLM on 2 CPU cores): note sentences and code texts are encoded once
and cached on disk, and only the graph encoder and the fusion head are trained.

The decision threshold is tuned on the dev notes only (:func:`kgcode.metrics.tune_threshold`), and
the epoch kept is the one with the best dev MAP. Every epoch writes a checkpoint (``last.pt`` in
``checkpoint_dir``); ``resume=True`` continues from it. Under ``torchrun --nproc_per_node N`` the
training notes are sharded over the processes and gradients are averaged by
:class:`~torch.nn.parallel.DistributedDataParallel` (gloo on CPU, nccl on GPU).

Example:
    >>> result = train(train_path="codiesp/train", dev_path="codiesp/dev", kg=kg)  # doctest: +SKIP
    >>> result.save_to_directory("model/")                                           # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusion.rerank import FEATURES as RERANK_FEATURES
from fusion.rerank import RELATION_FEATURES, RELATION_GROUPS, RelationTable, TreeEnsemble
from gnn.rsign import RelationalSIGN
from kgcode.coder import (
    Coder,
    CoderConfig,
    GraphInputs,
    ScoringInputs,
    check_note,
    config_from_dict,
    map_gold_codes,
    neighbourhood_labels,
)
from text_encoder.base import Segments

if TYPE_CHECKING:
    from kg.graph import KnowledgeGraph
    from kgcode.datasets import Note

__all__ = [
    "EncodedNotes",
    "Prepared",
    "TrainConfig",
    "TrainResult",
    "encode_notes",
    "evaluate_coder",
    "average_precisions",
    "fast_map",
    "lexicon_sweep",
    "mean_ap",
    "load_config_file",
    "prepare",
    "prepare_notes",
    "train",
    "tradeoff_metrics",
    "tune_lexicon",
    "tune_unseen_bias",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT_VERSION = 1


# =========================================================================== configuration


@dataclass
class TrainConfig:
    """Training options (the ``training`` section of a YAML config).

    Attributes:
        seed: seeds Python, NumPy and torch (recorded in the model card).
        epochs: passes over the training notes.
        pretrain_epochs: contrastive code-text alignment epochs before the notes (0: none).
        pretrain_batch: anchors per contrastive step.
        pretrain_max_pairs: at most this many alignment pairs per epoch (sampled).
        batch_size: notes per step.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        loss: ``"asl"`` (asymmetric loss) or ``"bce"``.
        asl_gamma_neg: ASL focusing on negatives.
        asl_clip: ASL probability margin on negatives.
        guideline_weight: weight of the GKI guideline contrast (0: off).
        n_hard: hard negatives per note, from the zero-shot ranking and (``refresh_hard``) from
            the current model's ranking.
        hard_pool: the top list the hard negatives are drawn from.
        refresh_hard: after each dev evaluation, re-rank all codes for the training notes with the
            current model and draw half of the hard negatives from its top list (codes the model
            wrongly likes, wherever they are in the label set).
        note_projection_lr_scale: learning-rate factor of the graph encoder and the attention
            projections while training on notes (after the alignment); the combination weights,
            bias and prior learn at ``note_calibration_lr_scale`` times the rate. 0 (default)
            freezes the projections on notes: measured on CodiEsp dev, training them on 500
            notes only lowered MAP (0.32 -> 0.31 at 0.1, 0.28 at 1.0).
        note_calibration_lr_scale: learning-rate factor of the combination weights on notes.
        sentence_pair_repeats: each mined (training sentence, gold code) pair is used this many times
            per alignment epoch (graph pairs are far more numerous).
        n_neighbours: graph neighbours (siblings, parents, children) of gold codes per note.
        n_random: random codes per step.
        contrast_temperature: InfoNCE temperature of the guideline contrast.
        eval_every: dev evaluation every this many epochs (the last epoch always).
        threshold_top_k: tune the threshold among each note's top ``k`` codes (``None``: all).
        max_train_notes: use only the first notes (quick runs).
        max_dev_notes: evaluate on the first dev notes only (quick runs).
        num_threads: torch threads (default: the CPUs available).
        tune_unseen_bias: after training, choose the model's ``unseen_bias`` (the logit offset of
            codes without training notes) on dev: the largest unseen-code R@10 whose dev MAP and
            micro-F1 stay within ``unseen_map_tolerance`` / ``unseen_f1_tolerance`` of the best
            over the grid ``0, unseen_bias_step, ..., unseen_bias_max`` (the sweep is recorded in
            the model card).
        unseen_bias_max: largest offset tried.
        unseen_bias_step: grid step.
        unseen_map_tolerance: dev MAP the unseen codes may cost (absolute).
        unseen_f1_tolerance: dev micro-F1 they may cost (absolute).
        tune_lexicon: after training, count the dictionary matches of each code in the training
            notes (:meth:`kgcode.coder.Coder.fit_lexicon`) and choose ``lexical_weight`` and
            ``lexical_prior`` on dev (best MAP over ``lexical_weights`` x ``lexical_priors``, each
            grid point scored end to end; the sweep is recorded in the model card). Needs
            ``lexicon`` on in the coder config.
        lexical_weights: weights tried (0 = no dictionary match).
        lexical_priors: priors tried.
        rerank_folds: fit the stacked candidate reranker (:mod:`fusion.rerank`) by cross-fitting
            on the training notes: the notes are cut into this many folds, a coder is trained on
            all folds but one (same settings, the dictionary weight and unseen offset of the
            main coder) and scores the fold it never saw; boosted trees learn from those
            candidates. 0 (default): no reranker. Each fold costs about one more training run.
        rerank_trees: boosting iterations of the reranker.
        rerank_learning_rate: its learning rate.
        rerank_leaves: leaves per tree.
        rerank_min_leaf: candidates per leaf at least.
    """

    seed: int = 13
    epochs: int = 8
    pretrain_epochs: int = 2
    pretrain_batch: int = 256
    pretrain_max_pairs: int = 60_000
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    loss: str = "asl"
    asl_gamma_neg: float = 2.0
    asl_clip: float = 0.02
    guideline_weight: float = 0.2
    n_hard: int = 48
    hard_pool: int = 200
    refresh_hard: bool = True
    note_projection_lr_scale: float = 0.0
    note_calibration_lr_scale: float = 10.0
    sentence_pair_repeats: int = 2
    n_neighbours: int = 16
    n_random: int = 256
    contrast_temperature: float = 0.1
    eval_every: int = 1
    threshold_top_k: int | None = None
    max_train_notes: int | None = None
    max_dev_notes: int | None = None
    num_threads: int | None = None
    tune_unseen_bias: bool = True
    unseen_bias_max: float = 1.5
    unseen_bias_step: float = 0.1
    unseen_map_tolerance: float = 0.002
    unseen_f1_tolerance: float = 0.005
    tune_lexicon: bool = True
    lexical_weights: list[float] = field(default_factory=lambda: [0.0, 1.0, 2.0, 3.0, 4.0, 6.0])
    lexical_priors: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.4, 0.8])
    rerank_folds: int = 0
    rerank_trees: int = 200
    rerank_learning_rate: float = 0.05
    rerank_leaves: int = 15
    rerank_min_leaf: int = 40

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping; unknown keys are an error (the message lists the known ones)."""
        return config_from_dict(cls, data, "training")


def load_config_file(path: str | os.PathLike[str]) -> tuple[CoderConfig, TrainConfig, dict[str, Any]]:
    """Read a YAML (or JSON) config: ``metadata``, ``model`` (:class:`CoderConfig`), ``training``.

    Args:
        path: the file.

    Returns:
        ``(coder config, training config, metadata)``.

    Raises:
        ValueError: unreadable file, not a mapping, or unknown keys (the message names them).
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read config {str(path)!r}: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config {str(path)!r}: expected a mapping with model/training sections")
    unknown = sorted(set(data) - {"metadata", "model", "training", "results"})
    if unknown:
        raise ValueError(
            f"config {str(path)!r}: unknown section(s) {', '.join(unknown)} "
            "(known: metadata, model, training)"
        )
    try:
        return (
            CoderConfig.from_dict(data.get("model") or {}),
            TrainConfig.from_dict(data.get("training") or {}),
            dict(data.get("metadata") or {}),
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"config {str(path)!r}: {err}") from None


# =========================================================================== notes


@dataclass
class EncodedNotes:
    """Notes as the trainer sees them: ids, gold label rows and encoded sentences.

    Attributes:
        ids: note ids.
        gold: label rows of each note's gold codes.
        segments: sentences, spans and vectors of each note.
    """

    ids: list[str]
    gold: list[list[int]]
    segments: list[Segments]

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx: Sequence[int]) -> EncodedNotes:
        """The notes at ``idx``."""
        return EncodedNotes(
            [self.ids[i] for i in idx], [self.gold[i] for i in idx], [self.segments[i] for i in idx]
        )


def prepare_notes(notes: Sequence[Note], label_row: Mapping[str, int]) -> tuple[list[Note], dict[str, Any]]:
    """Keep notes that can be coded and map their gold codes onto the labels.

    Args:
        notes: notes from :func:`kgcode.datasets.read_dataset`.
        label_row: the coder's label index.

    Returns:
        ``(notes, report)``: notes with a usable text (gold codes mapped with
        :func:`~kgcode.coder.map_gold_codes`, unmapped codes dropped), and counts of what was
        mapped or dropped.
    """
    from kgcode.datasets import Note

    all_codes = [c for n in notes for c in n.codes]
    mapping, unmapped = map_gold_codes(all_codes, label_row)
    kept: list[Note] = []
    skipped = 0
    for note in notes:
        try:
            text = check_note(note.text)
        except ValueError:
            skipped += 1
            continue
        codes: list[str] = []
        for c in note.codes:
            c = mapping.get(c, c)
            if c in label_row and c not in codes:
                codes.append(c)
        kept.append(Note(id=note.id, text=text, codes=codes))
    unmapped_set = set(unmapped)
    report = {
        "notes": len(kept),
        "notes_skipped": skipped,
        "codes_not_in_label_set": len({c for c in all_codes if c not in label_row}),
        "mentions_not_in_label_set": sum(1 for c in all_codes if c not in label_row),
        "codes_mapped": len(mapping),
        "mentions_mapped": sum(1 for c in all_codes if c in mapping),
        "codes_dropped": sorted(unmapped_set),
        "mentions_dropped": sum(1 for c in all_codes if c in unmapped_set),
    }
    return kept, report


def encode_notes(
    coder: Coder,
    notes: Sequence[Note],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    inference: bool = False,
    show_progress_bar: bool | None = None,
) -> EncodedNotes:
    """Encode notes' sentences with the coder's (frozen) encoder, cached on disk when possible.

    Args:
        coder: the coder.
        notes: prepared notes (see :func:`prepare_notes`).
        cache_dir: embedding cache folder (sentence vectors are cached like code texts, keyed by
            encoder and the sentence texts); ``None`` for no cache.
        inference: encode exactly as :meth:`Coder.predict` does (bf16 autocast when the coder's
            ``inference_dtype`` says so; never cached), to measure what users get.
        show_progress_bar: progress of the encoder.

    Returns:
        The encoded notes.
    """
    enc = coder.encoder
    texts = [n.text for n in notes]
    gold = [[coder.label_row[c] for c in n.codes if c in coder.label_row] for n in notes]
    segment = getattr(enc, "segment", None)
    if inference or cache_dir is None or segment is None:
        if inference:
            segs = coder.encode_notes(texts, show_progress_bar=show_progress_bar)
        else:
            with torch.inference_mode():
                segs = enc.encode_segments_many(texts, show_progress_bar=show_progress_bar)
        segs = [Segments(s.texts, s.spans, s.vectors.clone().float()) for s in segs]
        return EncodedNotes([n.id for n in notes], gold, segs)
    from text_encoder.cache import EmbeddingCache

    spans = [segment(t) for t in texts]
    flat_ids = [f"{n.id}#{k}" for n, sp in zip(notes, spans, strict=True) for k in range(len(sp))]
    flat = [t[a:b] for t, sp in zip(texts, spans, strict=True) for a, b in sp]
    vectors = EmbeddingCache(cache_dir).get_or_compute(
        {"kind": "note_segments"}, flat_ids, flat, enc, batch_size=64, show_progress_bar=show_progress_bar
    )
    segs, pos = [], 0
    for sp in spans:
        segs.append(Segments(flat[pos : pos + len(sp)], list(sp), vectors[pos : pos + len(sp)].float()))
        pos += len(sp)
    return EncodedNotes([n.id for n in notes], gold, segs)


# =========================================================================== evaluation


def gold_matrix(encoded: EncodedNotes, num_labels: int) -> np.ndarray:
    """0/1 gold matrix of encoded notes.

    Shapes:
        output: ``(len(encoded), num_labels)``, bool.
    """
    gold = np.zeros((len(encoded), num_labels), dtype=bool)
    for i, rows in enumerate(encoded.gold):
        gold[i, rows] = True
    return gold


@torch.no_grad()
def score_encoded(
    coder: Coder,
    encoded: EncodedNotes,
    *,
    part: str = "all",
    batch_size: int = 8,
    inputs: Sequence[ScoringInputs] | None = None,
) -> Tensor:
    """Logits of every label for encoded notes (uses the code bank).

    Args:
        coder: a finalized coder.
        encoded: the notes.
        part: see :meth:`Coder.score_notes`.
        batch_size: notes per scoring batch.
        inputs: :meth:`Coder.scoring_inputs` of each batch (as :func:`scoring_inputs` returns
            them for the same ``batch_size``), to score the same notes again faster.

    Shapes:
        output: ``(len(encoded), num_labels)``.
    """
    out = []
    for j, start in enumerate(range(0, len(encoded), batch_size)):
        batch = encoded.segments[start : start + batch_size]
        out.append(coder.score_notes(batch, part=part, inputs=inputs[j] if inputs else None)[0])
    return torch.cat(out) if out else torch.zeros(0, len(coder.labels))


def scoring_inputs(coder: Coder, encoded: EncodedNotes, *, batch_size: int = 8) -> list[ScoringInputs]:
    """:meth:`Coder.scoring_inputs` of each batch of :func:`score_encoded` (same ``batch_size``)."""
    return [
        coder.scoring_inputs(encoded.segments[start : start + batch_size])
        for start in range(0, len(encoded), batch_size)
    ]


def evaluate_coder(
    coder: Coder,
    encoded: EncodedNotes,
    *,
    part: str = "all",
    threshold: float | None = None,
    logits: Tensor | None = None,
) -> dict[str, Any]:
    """The issue's metrics on encoded notes (probabilities, the coder's threshold).

    Args:
        coder: a finalized coder.
        encoded: the notes.
        part: ``"all"``, ``"zero_shot"`` or ``"supervised"`` (hybrid head).
        threshold: decision threshold (default: the coder's).
        logits: precomputed logits (skips scoring).

    Returns:
        :func:`kgcode.metrics.evaluate` output with ``buckets`` by training frequency.
    """
    from kgcode.metrics import evaluate

    if logits is None:
        logits = score_encoded(coder, encoded, part=part)
    probs = torch.sigmoid(logits).numpy()
    thr = coder.threshold if threshold is None else threshold
    return evaluate(
        probs,
        gold_matrix(encoded, len(coder.labels)),
        threshold=thr,
        train_counts=np.asarray(coder.train_counts),
    )


def tradeoff_metrics(
    logits: Tensor,
    gold: Sequence[Sequence[int]],
    unseen: Tensor,
    biases: Sequence[float] = (0.0,),
    *,
    top: int = 60,
) -> list[dict[str, float]]:
    """Fast dev metrics for the unseen-code trade-off, for several unseen-code logit offsets.

    For each offset: MAP (cut at 1,000), the best micro-F1 over thresholds (among each note's
    ``top`` seen and ``top`` unseen codes: exact whenever the best threshold keeps fewer) and the R@10 of
    the gold codes without training notes. Each note's seen and unseen scores are sorted once, so
    an offset costs a few binary searches. Notes without gold codes are skipped.

    Shapes:
        logits: ``(n, num_labels)``; unseen: ``(num_labels,)`` bool.
    """
    prepared = []
    n_gold = 0
    for i, rows in enumerate(gold):
        if not rows:
            continue
        s = logits[i].float()
        g = torch.tensor(list(rows), dtype=torch.long)
        seen_s, unseen_s = s[~unseen].sort().values, s[unseen].sort().values
        seen_rows, unseen_rows = (~unseen).nonzero()[:, 0], unseen.nonzero()[:, 0]
        tops = [rows_[s[rows_].topk(min(top, len(rows_))).indices] for rows_ in (seen_rows, unseen_rows)]
        ti = torch.cat(tops)  # each part's best: the offset never reorders codes within a part
        prepared.append((s[g], unseen[g], seen_s, unseen_s, s[ti], unseen[ti], torch.isin(ti, g), len(rows)))
        n_gold += len(rows)
    out = []
    for bias in biases:
        aps, scores, hits = [], [], []
        unseen_gold = unseen_hit = 0
        for gs, gu, seen_s, unseen_s, tv, tu, th, n in prepared:
            x = gs + bias * gu.float()  # the gold codes' scores with the offset
            above_seen = len(seen_s) - torch.searchsorted(seen_s, x, right=True)
            above_unseen = len(unseen_s) - torch.searchsorted(unseen_s + bias, x, right=True)
            ranks = above_seen + above_unseen + 1
            rk = ranks.sort().values
            prec = torch.arange(1, n + 1, dtype=torch.float32) / rk.float()
            aps.append(float((prec * (rk <= 1000)).sum()) / n)
            unseen_gold += int(gu.sum())
            unseen_hit += int((gu & (ranks <= 10)).sum())
            scores.append(tv + bias * tu.float())
            hits.append(th)
        if not aps:
            out.append({"map": 0.0, "micro_f1": 0.0, "unseen_r@10": 0.0})
            continue
        val, hit = torch.cat(scores), torch.cat(hits)
        order = val.argsort(descending=True)
        tp = hit[order].float().cumsum(0)
        p = tp / torch.arange(1, len(order) + 1)
        r = tp / n_gold
        f1 = float((2 * p * r / (p + r).clamp(min=1e-9)).max())
        out.append(
            {"map": sum(aps) / len(aps), "micro_f1": f1, "unseen_r@10": unseen_hit / max(1, unseen_gold)}
        )
    return out


def average_precisions(logits: Tensor, gold: Sequence[Sequence[int]], *, k: int = 1000) -> Tensor:
    """Each note's average precision cut at ``k`` (as :func:`kgcode.metrics.mean_average_precision`).

    Ties are broken by ``topk``'s order. Notes without gold codes get NaN.

    Shapes:
        logits: ``(n, num_labels)``; output: ``(n,)``.
    """
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    out = torch.full((len(gold),), float("nan"))
    ranks = torch.arange(1, k + 1, dtype=torch.float32)
    for i, rows in enumerate(gold):
        if rows:
            hit = torch.isin(top[i], torch.as_tensor(list(rows), dtype=torch.long)).float()
            out[i] = float((hit.cumsum(0) / ranks * hit).sum()) / len(rows)
    return out


def mean_ap(ap: Tensor, notes: Sequence[int] | None = None) -> float:
    """MAP from per-note average precisions (:func:`average_precisions`), over ``notes`` (default: all).

    Notes without gold codes (NaN) are skipped; 0 when none is left.

    Shapes:
        ap: ``(n,)``.
    """
    if notes is not None:
        ap = ap[torch.as_tensor(list(notes), dtype=torch.long)]
    ap = ap[~ap.isnan()]
    return float(ap.mean()) if len(ap) else 0.0


def fast_map(logits: Tensor, gold: Sequence[Sequence[int]], *, k: int = 1000) -> float:
    """MAP cut at ``k`` from a top-k (:func:`average_precisions` averaged over notes with gold codes).

    Shapes:
        logits: ``(n, num_labels)``.
    """
    return mean_ap(average_precisions(logits, gold, k=k))


def lexicon_sweep(coder: Coder, encoded: EncodedNotes, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Score the notes with every (weight, prior) of the grid, exactly as the coder will predict.

    The dictionary term enters both scoring stages (a matched code becomes a candidate), so each
    grid point is scored end to end rather than added to fixed logits afterwards; what does not
    depend on the weight and prior (padding, dictionary look-up, the zero-shot product over all
    labels) is computed once (:meth:`Coder.scoring_inputs`). The coder's ``lexical_weight`` /
    ``lexical_prior`` are restored.

    Args:
        coder: a finalized coder with a lexicon and its training-note counts.
        encoded: the (dev) notes.
        cfg: the grids ``lexical_weights`` x ``lexical_priors``.

    Returns:
        One ``{"weight", "prior", "ap"}`` per grid point; ``ap`` holds each note's average
        precision (:func:`average_precisions`), so any subset of notes can be scored later.
    """
    saved = coder.config.lexical_weight, coder.config.lexical_prior
    sweep: list[dict[str, Any]] = []
    without: Tensor | None = None  # weight 0 is the same for every prior: scored once
    inputs = scoring_inputs(coder, encoded)
    try:
        for prior in cfg.lexical_priors:
            for weight in cfg.lexical_weights:
                coder.config.lexical_weight, coder.config.lexical_prior = weight, prior
                if weight != 0 or without is None:
                    ap = average_precisions(score_encoded(coder, encoded, inputs=inputs), encoded.gold)
                    without = ap if weight == 0 else without
                else:
                    ap = without
                sweep.append({"weight": weight, "prior": prior, "ap": ap})
    finally:
        coder.config.lexical_weight, coder.config.lexical_prior = saved
    return sweep


def tune_lexicon(
    sweep: Sequence[Mapping[str, Any]], notes: Sequence[int] | None = None
) -> tuple[float, float, list[dict[str, float]]]:
    """Choose the dictionary match's weight and prior: the best MAP of the sweep over ``notes``.

    Args:
        sweep: :func:`lexicon_sweep` output.
        notes: the notes (indices) to choose on (default: all).

    Returns:
        ``(weight, prior, table)``; ties keep the smaller weight, then the smaller prior. ``table``
        has the MAP of every grid point over ``notes``.
    """
    table = [
        {"weight": e["weight"], "prior": e["prior"], "map": round(mean_ap(e["ap"], notes), 4)} for e in sweep
    ]
    best = max(table, key=lambda m: (m["map"], -m["weight"], -m["prior"]))
    return float(best["weight"]), float(best["prior"]), table


def tune_unseen_bias(
    logits: Tensor, gold: Sequence[Sequence[int]], unseen: Tensor, cfg: TrainConfig
) -> tuple[float, list[dict[str, float]]]:
    """Choose the logit offset of codes without training notes on dev (see :class:`TrainConfig`).

    Args:
        logits: dev logits without any offset.
        gold: each dev note's gold label rows.
        unseen: labels without training notes.
        cfg: the grid and the tolerances.

    Returns:
        ``(offset, sweep)``: the chosen offset and the dev metrics of every offset tried.
    """
    steps = int(round(cfg.unseen_bias_max / cfg.unseen_bias_step)) if cfg.unseen_bias_step > 0 else 0
    grid = [round(j * cfg.unseen_bias_step, 4) for j in range(steps + 1)]
    sweep = [
        {"unseen_bias": bias, **{k: round(v, 4) for k, v in m.items()}}
        for bias, m in zip(grid, tradeoff_metrics(logits, gold, unseen, grid), strict=True)
    ]
    best_map = max(m["map"] for m in sweep)
    best_f1 = max(m["micro_f1"] for m in sweep)
    ok = [
        m
        for m in sweep
        if m["map"] >= best_map - cfg.unseen_map_tolerance
        and m["micro_f1"] >= best_f1 - cfg.unseen_f1_tolerance
    ]
    ok = ok or [max(sweep, key=lambda m: m["map"])]
    chosen = max(ok, key=lambda m: (m["unseen_r@10"], m["map"]))
    return float(chosen["unseen_bias"]), sweep


# =========================================================================== losses


def asymmetric_loss(logits: Tensor, targets: Tensor, *, gamma_neg: float = 2.0, clip: float = 0.02) -> Tensor:
    """Asymmetric loss (Ridnik et al., ICCV 2021) with ``gamma_pos = 0``, mean over cells.

    Shapes:
        logits, targets: ``(b, c)``.
    """
    p = torch.sigmoid(logits)
    p_neg = (p - clip).clamp(min=0) if clip > 0 else p
    loss_pos = targets * F.logsigmoid(logits)
    log_neg = torch.log((1 - p_neg).clamp(min=1e-8))
    loss_neg = (1 - targets) * log_neg * p_neg.pow(gamma_neg)
    return -(loss_pos + loss_neg).sum() / max(1, targets.shape[0])


def info_nce(scores: Tensor, positive: Tensor) -> Tensor:
    """Cross-entropy of each row's positive column.

    Shapes:
        scores: ``(n, m)``; positive: ``(n,)`` column indices.
    """
    return F.cross_entropy(scores, positive)


# =========================================================================== graph-mined pairs and negatives


@dataclass
class _Neighbours:
    """Per label: graph neighbours among the labels (siblings, parent, children) and excludes targets."""

    near: list[list[int]]
    excludes: list[list[int]]


def _label_neighbours(kg: KnowledgeGraph, labels: Sequence[str], label_row: Mapping[str, int]) -> _Neighbours:
    graph = kg.graph
    near: list[list[int]] = []
    excl: list[list[int]] = []
    for code in labels:
        parents = [p for p, keys in graph._succ[code].items() if "is_a" in keys]
        nb: set[str] = set(parents)
        for p in parents:
            nb.update(c for c, keys in graph._pred[p].items() if "is_a" in keys)
        nb.update(c for c, keys in graph._pred[code].items() if "is_a" in keys)
        nb.discard(code)
        near.append(sorted(label_row[c] for c in nb if c in label_row))
        ex = {d for d, keys in graph._succ[code].items() if "excludes1" in keys or "excludes2" in keys}
        for p in parents:
            ex.update(d for d, keys in graph._succ[p].items() if "excludes1" in keys or "excludes2" in keys)
        excl.append(sorted(label_row[c] for c in ex if c in label_row))
    return _Neighbours(near, excl)


def _alignment_pairs(coder: Coder, kg: KnowledgeGraph) -> tuple[Tensor, Tensor]:
    """Anchors that name a label, from the graph: DO/Mondo xrefs, ICD-9 GEM equivalents, parents.

    Returns:
        ``(anchor vectors, label rows)``.

    Shapes:
        anchors: ``(p, text_dim)``; rows: ``(p,)``.
    """
    gi = coder._graph_inputs
    if gi is None:
        return torch.zeros(0, coder.text_dim), torch.zeros(0, dtype=torch.long)
    index = gi.index
    graph = kg.graph
    anchors: list[int] = []
    rows: list[int] = []
    for r, code in enumerate(coder.labels):
        for other, keys in graph._pred[code].items():  # DO/Mondo concept -xref-> code
            if "xref" in keys and other in index:
                anchors.append(index.row(other))
                rows.append(r)
        for other, keys in graph._succ[code].items():
            if "gem_equivalent" in keys and other in index:
                anchors.append(index.row(other))
                rows.append(r)
        for other, keys in graph._pred[code].items():
            if "gem_equivalent" in keys and other in index:
                anchors.append(index.row(other))
                rows.append(r)
    if not anchors:
        return torch.zeros(0, coder.text_dim), torch.zeros(0, dtype=torch.long)
    a = torch.tensor(anchors)
    vec = gi.x[a]
    ok = vec.abs().sum(-1) > 0
    return vec[ok], torch.tensor(rows)[ok]


def _best_sentences(encoded: EncodedNotes, text: Tensor) -> tuple[Tensor, Tensor]:
    """For each (training note, gold code): the sentence most similar to the code's text.

    Shapes:
        output: ``(p, text_dim)`` sentence vectors and ``(p,)`` label rows.
    """
    vecs, rows = [], []
    for seg, gold in zip(encoded.segments, encoded.gold, strict=True):
        if not gold or len(seg) == 0:
            continue
        s = F.normalize(seg.vectors.float(), dim=-1)
        t = F.normalize(text[torch.tensor(gold)].float(), dim=-1)
        best = (t @ s.T).argmax(dim=1)
        vecs.append(seg.vectors[best].float())
        rows.extend(gold)
    if not vecs:
        return torch.zeros(0, text.shape[1]), torch.zeros(0, dtype=torch.long)
    return torch.cat(vecs), torch.tensor(rows)


@torch.no_grad()
def _model_top(coder: Coder, encoded: EncodedNotes, k: int) -> list[list[int]]:
    """Each note's ``k`` best labels under the current (finalized) model, gold included."""
    logits = score_encoded(coder, encoded)
    return logits.topk(min(k, logits.shape[1]), dim=1).indices.tolist()


@torch.no_grad()
def _zero_shot_top(coder: Coder, encoded: EncodedNotes, k: int, *, batch_size: int = 4) -> list[list[int]]:
    """Each note's ``k`` best labels by zero-shot similarity (max cosine sentence / code text)."""
    text = F.normalize(coder.code_text.float(), dim=-1)
    dtype = torch.bfloat16 if len(coder.labels) > 20_000 else torch.float32
    text = text.to(dtype)
    out: list[list[int]] = []
    k = min(k, len(coder.labels))
    for start in range(0, len(encoded), batch_size):
        vec, mask = coder.pad_segments(encoded.segments[start : start + batch_size])
        seg = F.normalize(vec, dim=-1).to(dtype)
        sim = torch.einsum("bsd,cd->bcs", seg, text).float()
        sim = sim.masked_fill(~mask[:, None, :], -2.0).amax(-1)
        out.extend(sim.topk(k, dim=1).indices.tolist())
    return out


# =========================================================================== the trainable step


class _Trainable(nn.Module):
    """The trainable parts (graph encoder + fusion head) and the losses, for DDP to wrap.

    The frozen text encoder is not a submodule: DDP never sees (or broadcasts) its weights.
    """

    def __init__(self, coder: Coder, cfg: TrainConfig) -> None:
        super().__init__()
        self.graph = coder.graph
        self.fusion = coder.fusion
        self.memory = coder.memory
        self._coder = [coder]  # not a submodule
        self.cfg = cfg

    @property
    def coder(self) -> Coder:
        return self._coder[0]

    def _supervised(self) -> nn.Module:
        head = self.fusion
        return head.supervised if hasattr(head, "supervised") else head

    def forward(self, kind: str, **batch: Tensor) -> Tensor:
        if kind == "align":
            return self._align(batch["anchors"], batch["rows"], batch["candidates"], batch["positive"])
        if kind == "notes":
            return self._notes(**batch)
        raise ValueError(kind)

    def _align(self, anchors: Tensor, rows: Tensor, candidates: Tensor, positive: Tensor) -> Tensor:
        coder = self.coder
        sup = self._supervised()
        codes = coder.head_codes(coder.code_vectors(candidates))
        if not hasattr(sup, "query"):
            return codes.sum() * 0.0
        keys = F.normalize(sup.key(anchors), dim=-1)
        values = F.normalize(sup.value(anchors), dim=-1)
        query = F.normalize(sup.query(codes), dim=-1)
        out = F.normalize(sup.out(codes), dim=-1)
        s_att = keys @ query.T * sup.log_attn_scale.exp()
        s_out = values @ out.T * sup.log_out_scale.exp()
        return info_nce(s_att, positive) + info_nce(s_out, positive)

    def _notes(
        self,
        vectors: Tensor,
        mask: Tensor,
        candidates: Tensor,
        targets: Tensor,
        guide: Tensor,
        guide_mask: Tensor,
        gold_note: Tensor,
        gold_col: Tensor,
        note_idx: Tensor,
    ) -> Tensor:
        coder, cfg, head = self.coder, self.cfg, self.fusion
        codes = coder.head_codes(coder.code_vectors(candidates))
        logits, _ = head(vectors, mask, codes)
        if self.memory is not None:  # leave-one-out: the note's own evidence, vote and count are left out
            logits = logits + self.memory(vectors, mask, rows=candidates, exclude=note_idx)
        if cfg.loss == "bce":
            loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / max(1, len(targets))
        else:
            loss = asymmetric_loss(logits, targets, gamma_neg=cfg.asl_gamma_neg, clip=cfg.asl_clip)
        sup = self._supervised()
        if cfg.guideline_weight > 0 and gold_note.numel() > 1 and hasattr(sup, "evidence"):
            gold_codes = codes[gold_col]
            # per (note, gold code): evidence from the note and from the note's guideline
            ev_note, _ = sup.evidence(vectors[gold_note], mask[gold_note], gold_codes)
            ev_guide, _ = sup.evidence(guide[gold_note], guide_mask[gold_note], gold_codes)
            idx = torch.arange(len(gold_note))
            a = F.normalize(ev_note[idx, idx], dim=-1)
            b = F.normalize(ev_guide[idx, idx], dim=-1)
            sim = a @ b.T / cfg.contrast_temperature
            same = gold_col[:, None] == gold_col[None, :]
            sim = sim.masked_fill(same & ~torch.eye(len(idx), dtype=torch.bool), -1e4)
            loss = loss + cfg.guideline_weight * info_nce(sim, idx)
        return loss


# =========================================================================== result


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        coder: the trained, finalized coder (threshold tuned on dev).
        metrics: dev metrics of the kept epoch at the tuned threshold.
        history: per-epoch losses and dev metrics.
        config: the full configuration (``metadata``, ``model``, ``training``) that replays the run.
        seconds: wall time of the whole training.
    """

    coder: Coder
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def save_to_directory(self, path: str | os.PathLike[str]) -> Path:
        """Save the coder folder (see :meth:`Coder.save`) and the replayable ``train_config.yaml``
        beside its files.

        Args:
            path: the folder.

        Returns:
            The folder.
        """
        import yaml

        folder = self.coder.save(path)
        data = dict(self.config)
        data["results"] = {"dev": _round(self.metrics), "seconds": round(self.seconds, 1)}
        (folder / "train_config.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return folder


def _round(obj: Any) -> Any:
    if isinstance(obj, float):
        return round(obj, 4)
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round(v) for v in obj]
    return obj


# =========================================================================== distributed helpers


def _dist_setup() -> tuple[int, int, bool]:
    """``(rank, world_size, initialised_here)``; initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    logger.info("distributed training: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return dist.get_rank(), dist.get_world_size(), True


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# =========================================================================== train


@dataclass
class Prepared:
    """Everything a training run reads that does not depend on the trained weights.

    Built once by :func:`prepare` and reusable by several :func:`train` calls with the same text
    encoder (an ablation: with and without the graph encoder, with and without pre-training).

    Attributes:
        kg: the graph.
        labels: the label codes.
        counts: training notes per code.
        reports: what :func:`prepare_notes` kept, mapped and dropped (``train``, ``dev``).
        enc_train: encoded training notes.
        enc_dev: encoded dev notes.
        text: code text vectors of the labels.
        graph: graph inputs (node features, typed edges; propagated features when computed).
        neighbours: graph neighbours and excludes targets of each label.
        hard: each training note's zero-shot top labels.
        guides: each training note's synthetic guideline (segment vectors).
        encoder_config: the text encoder every tensor here comes from.
        sources: where the notes came from (for the model card).
        operators: the propagation operators of ``graph.propagated``.
        code_names: the ``CoderConfig.code_names`` the code texts, neighbours and guidelines follow.
        names: each label name's vector and label row (``CoderConfig.zero_shot_names``; ``None``
            when prepared without).
    """

    kg: Any
    labels: list[str]
    counts: dict[str, int]
    reports: dict[str, Any]
    enc_train: EncodedNotes
    enc_dev: EncodedNotes
    text: Tensor
    graph: Any
    neighbours: Any
    hard: list[list[int]]
    guides: list[Tensor]
    encoder_config: dict[str, Any]
    sources: dict[str, str]
    operators: Any = None
    code_names: str = "kg"
    names: tuple[Tensor, Tensor] | None = None


def _load_kg(kg: Any) -> Any:
    from kg import load_kg
    from kgcode import paths

    if kg is None:
        last = paths.last_kg_dir()
        if last is None:
            raise ValueError("no KG: pass kg= (or build one with `kgcode kg build`)")
        return load_kg(last)
    if not hasattr(kg, "graph"):
        return load_kg(kg)
    return kg


def prepare(
    *,
    train_path: str | os.PathLike[str] | None = None,
    dev_path: str | os.PathLike[str] | None = None,
    train_notes: Sequence[Note] | None = None,
    dev_notes: Sequence[Note] | None = None,
    kg: KnowledgeGraph | str | os.PathLike[str] | None = None,
    config: CoderConfig | Mapping[str, Any] | None = None,
    training: TrainConfig | Mapping[str, Any] | None = None,
    labels: Sequence[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    show_progress_bar: bool | None = None,
) -> Prepared:
    """Read and encode the notes and the codes once (see :func:`train` for the arguments).

    Returns:
        The prepared data.

    Raises:
        ValueError: no usable training or dev notes.
        FileNotFoundError: a data path does not exist.
    """
    from kgcode import paths
    from kgcode.coder import label_codes
    from kgcode.datasets import code_counts, read_dataset

    cfg = config if isinstance(config, CoderConfig) else CoderConfig.from_dict(config or {})
    tcfg = training if isinstance(training, TrainConfig) else TrainConfig.from_dict(training or {})
    if cache_dir is None:
        cache_dir = paths.cache_dir() / "embeddings"
    kg = _load_kg(kg)

    def _read(path: Any, given: Any, what: str) -> list[Note]:
        if given is not None:
            return list(given)
        if path is None:
            raise ValueError(f"no {what} notes: pass {what}_path or {what}_notes")
        if not Path(path).exists():
            raise FileNotFoundError(2, "no such file or folder", str(path))
        notes, report = read_dataset(path)
        logger.info("%s", report.summary())
        return notes

    raw_train = _read(train_path, train_notes, "train")
    raw_dev = _read(dev_path, dev_notes, "dev")
    if tcfg.max_train_notes:
        raw_train = raw_train[: tcfg.max_train_notes]
    if tcfg.max_dev_notes:
        raw_dev = raw_dev[: tcfg.max_dev_notes]
    label_list = list(labels) if labels is not None else label_codes(kg, cfg.label_system, cfg.label_kinds)
    if labels is None and cfg.label_scope == "data":
        full_row = {c: i for i, c in enumerate(label_list)}
        mapping, _ = map_gold_codes([c for n in raw_train + raw_dev for c in n.codes], full_row)
        seeds = {mapping.get(c, c) for n in raw_train + raw_dev for c in n.codes}
        label_list = neighbourhood_labels(kg, seeds, label_list)
        logger.info("label scope 'data': %d labels", len(label_list))
    elif cfg.label_scope not in ("all", "data"):
        raise ValueError(f"label_scope={cfg.label_scope!r}: expected 'all' or 'data'")
    row = {c: i for i, c in enumerate(label_list)}
    tr_notes, tr_report = prepare_notes(raw_train, row)
    dv_notes, dv_report = prepare_notes(raw_dev, row)
    if not tr_notes or not any(n.codes for n in tr_notes):
        raise ValueError("no training note with a usable gold code")
    if not dv_notes:
        raise ValueError("no usable dev note")
    counts = dict(code_counts(tr_notes))
    # graph inputs (the texts of every node of every system: ~180k, 40 min to embed from an empty
    # cache on 2 cores) only when the config has a graph encoder; a text-only config embeds its
    # labels' texts only. A prepared run of a graph config serves text-only variants too.
    probe = Coder.from_kg(cfg, kg, train_counts=counts, labels=label_list)
    probe.attach(kg, cache_dir, show_progress_bar=show_progress_bar)
    t0 = time.perf_counter()
    enc_train = encode_notes(probe, tr_notes, cache_dir=cache_dir, show_progress_bar=show_progress_bar)
    enc_dev = encode_notes(probe, dv_notes, cache_dir=cache_dir, show_progress_bar=show_progress_bar)
    logger.info(
        "encoded %d train and %d dev notes in %.1f s", len(enc_train), len(enc_dev), time.perf_counter() - t0
    )
    t0 = time.perf_counter()
    titles_only = cfg.code_names == "title"
    if titles_only:  # the no-KG ablation: no hierarchy or Excludes neighbours
        neighbours = _Neighbours([[] for _ in probe.labels], [[] for _ in probe.labels])
    else:
        neighbours = _label_neighbours(kg, probe.labels, probe.label_row)
    hard = _zero_shot_top(probe, enc_train, tcfg.hard_pool)
    guides = _guidelines(probe, kg, enc_train, parents=not titles_only)
    logger.info("neighbours, zero-shot hard negatives and guidelines in %.1f s", time.perf_counter() - t0)
    operators = probe.graph.operators if isinstance(probe.graph, RelationalSIGN) else None
    return Prepared(
        kg=kg,
        labels=label_list,
        counts=counts,
        reports={"train": tr_report, "dev": dv_report},
        enc_train=enc_train,
        enc_dev=enc_dev,
        text=probe.code_text,
        graph=probe._graph_inputs,
        neighbours=neighbours,
        hard=hard,
        guides=guides,
        encoder_config=probe.encoder.get_config(),
        sources={
            "train": str(train_path) if train_path else "<notes>",
            "dev": str(dev_path) if dev_path else "<notes>",
        },
        operators=operators,
        code_names=cfg.code_names,
        names=probe._names,
    )


def train(
    *,
    train_path: str | os.PathLike[str] | None = None,
    dev_path: str | os.PathLike[str] | None = None,
    train_notes: Sequence[Note] | None = None,
    dev_notes: Sequence[Note] | None = None,
    kg: KnowledgeGraph | str | os.PathLike[str] | None = None,
    config: CoderConfig | Mapping[str, Any] | None = None,
    training: TrainConfig | Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    labels: Sequence[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    show_progress_bar: bool | None = None,
    prepared: Prepared | None = None,
) -> TrainResult:
    """Train a coder on training notes, selecting the epoch and threshold on dev notes.

    Args:
        train_path: training data (CodiEsp split folder, JSONL, MIMIC folder), or
        train_notes: the notes themselves.
        dev_path: dev data, or
        dev_notes: the notes themselves (required one way or the other: threshold and epoch are
            chosen on dev, never on training notes).
        kg: the KG (a loaded graph or its folder; default: the last KG built).
        config: the model configuration (:class:`~kgcode.coder.CoderConfig` or a mapping).
        training: the training configuration (:class:`TrainConfig` or a mapping).
        metadata: free-form facts recorded with the config (e.g. a run name).
        labels: restrict the label set (default: the KG's codes of ``config.label_kinds``).
        cache_dir: embedding cache folder (default: ``<kgcode cache>/embeddings``).
        checkpoint_dir: where ``last.pt`` is written each epoch (``None``: no checkpoints).
        resume: continue from ``checkpoint_dir/last.pt`` when it exists.
        show_progress_bar: ``None`` shows bars only on a terminal.
        prepared: data from :func:`prepare` (then the data, KG and label arguments are not read).

    Returns:
        A :class:`TrainResult`.

    Raises:
        ValueError: no training or dev notes, a bad option, or ``prepared`` from another encoder.
        FileNotFoundError: a data path does not exist.
    """
    from kgcode.metrics import tune_threshold

    t_start = time.perf_counter()
    cfg = config if isinstance(config, CoderConfig) else CoderConfig.from_dict(config or {})
    tcfg = training if isinstance(training, TrainConfig) else TrainConfig.from_dict(training or {})
    if tcfg.num_threads:
        torch.set_num_threads(int(tcfg.num_threads))
    rank, world, owns_group = _dist_setup()
    _seed_all(tcfg.seed)
    if prepared is None:
        prepared = prepare(
            train_path=train_path,
            dev_path=dev_path,
            train_notes=train_notes,
            dev_notes=dev_notes,
            kg=kg,
            config=cfg,
            training=tcfg,
            labels=labels,
            cache_dir=cache_dir,
            show_progress_bar=show_progress_bar,
        )
    kg = prepared.kg
    coder = Coder.from_kg(cfg, kg, train_counts=prepared.counts, labels=prepared.labels)
    if coder.encoder.get_config() != prepared.encoder_config:
        raise ValueError("prepared data come from another text encoder than this config's")
    if cfg.code_names != prepared.code_names:
        raise ValueError(
            f"prepared data describe codes by their {prepared.code_names!r} names, this config by "
            f"{cfg.code_names!r}: prepare with this config"
        )
    graph = prepared.graph if coder.graph is not None else None
    if coder.graph is not None and graph is None:
        raise ValueError("prepared data have no graph inputs (a text-only config): prepare with this config")
    if (
        graph is not None
        and isinstance(coder.graph, RelationalSIGN)
        and coder.graph.operators != prepared.operators
    ):
        graph = GraphInputs(
            graph.x,
            graph.edge_index,
            graph.edge_type,
            graph.relation_names,
            graph.label_nodes,
            None,
            graph.index,
        )
    if cfg.zero_shot_names and prepared.names is None:
        raise ValueError("prepared data have no code names (zero_shot_names off): prepare with this config")
    coder.attach_tensors(prepared.text, graph, prepared.names if cfg.zero_shot_names else None)
    enc_train, enc_dev = prepared.enc_train, prepared.enc_dev
    neighbours, hard, guides, counts = prepared.neighbours, prepared.hard, prepared.guides, prepared.counts
    tr_report, dv_report = prepared.reports["train"], prepared.reports["dev"]
    train_path = train_path or prepared.sources["train"]
    dev_path = dev_path or prepared.sources["dev"]

    if coder.memory is not None:
        coder.memory.build(enc_train.segments, enc_train.gold, coder.code_text)
    trainable = _Trainable(coder, tcfg)
    proj_names = (
        "graph.",
        "fusion.supervised.key.",
        "fusion.supervised.query.",
        "fusion.supervised.value.",
        "fusion.supervised.out.",
        "fusion.key.",
        "fusion.query.",
        "fusion.value.",
        "fusion.out.",
    )
    named = [(n, p) for n, p in trainable.named_parameters() if p.requires_grad]
    proj = [p for n, p in named if n.startswith(proj_names)]
    calib = [p for n, p in named if not n.startswith(proj_names)]
    model: nn.Module = trainable
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(trainable, find_unused_parameters=True, broadcast_buffers=False)
    optimizer = torch.optim.AdamW(
        [{"params": proj, "name": "projections"}, {"params": calib, "name": "calibration"}],
        lr=tcfg.lr,
        weight_decay=tcfg.weight_decay,
    )

    full_config = {
        "metadata": {
            **dict(metadata or {}),
            "seed": tcfg.seed,
            "world_size": world,
            "train": str(train_path) if train_path else "<notes>",
            "dev": str(dev_path) if dev_path else "<notes>",
        },
        "model": cfg.to_dict(),
        "training": asdict(tcfg),
    }
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    history: list[dict[str, Any]] = []
    start_epoch, best_state, best_map = 0, None, -1.0
    pre_done = 0
    if resume and ckpt_dir is not None and (ckpt_dir / "last.pt").is_file():
        state = torch.load(ckpt_dir / "last.pt", map_location="cpu", weights_only=False)
        if state.get("format_version") != CHECKPOINT_FORMAT_VERSION:
            raise ValueError(
                f"{ckpt_dir / 'last.pt'}: checkpoint format {state.get('format_version')}, "
                f"expected {CHECKPOINT_FORMAT_VERSION}"
            )
        if state.get("num_labels") != len(coder.labels):
            raise ValueError(
                f"{ckpt_dir / 'last.pt'}: checkpoint of {state.get('num_labels')} labels, "
                f"this run has {len(coder.labels)}"
            )
        coder.load_trainable_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, pre_done = int(state["epoch"]), int(state.get("pretrain_done", 0))
        history, best_map, best_state = state["history"], float(state["best_map"]), state["best_state"]
        random.setstate(state["rng"]["python"])
        np.random.set_state(state["rng"]["numpy"])
        torch.set_rng_state(state["rng"]["torch"])
        logger.info("resumed from %s at epoch %d", ckpt_dir / "last.pt", start_epoch)

    def checkpoint(epoch: int, pretrain_done: int) -> None:
        if ckpt_dir is None or rank != 0:
            return
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "epoch": epoch,
            "pretrain_done": pretrain_done,
            "num_labels": len(coder.labels),
            "model": coder.trainable_state_dict(),
            "optimizer": optimizer.state_dict(),
            "history": history,
            "best_map": best_map,
            "best_state": best_state,
            "config": full_config,
            "rng": {
                "python": random.getstate(),
                "numpy": np.random.get_state(),
                "torch": torch.get_rng_state(),
            },
        }
        tmp = ckpt_dir / f".last.pt.tmp-{os.getpid()}"
        torch.save(state, tmp)
        os.replace(tmp, ckpt_dir / "last.pt")

    # ---- 1. contrastive code-text alignment
    if pre_done < tcfg.pretrain_epochs:
        g_anchor, g_rows = _alignment_pairs(coder, kg)
        s_anchor, s_rows = _best_sentences(enc_train, coder.code_text)
        anchors, arows = torch.cat([g_anchor, s_anchor]), torch.cat([g_rows, s_rows])
        n_graph = len(g_rows)
        logger.info("alignment pairs: %d from the graph, %d from training sentences", n_graph, len(s_rows))
        for ep in range(pre_done, tcfg.pretrain_epochs):
            t_ep = time.perf_counter()
            loss = _run_align_epoch(
                model,
                optimizer,
                anchors,
                arows,
                n_graph,
                neighbours,
                tcfg,
                ep,
                rank,
                world,
                show_progress_bar,
            )
            history.append(
                {
                    "stage": "align",
                    "epoch": ep + 1,
                    "loss": loss,
                    "seconds": round(time.perf_counter() - t_ep, 1),
                }
            )
            logger.info("align epoch %d: loss %.4f (%.1f s)", ep + 1, loss, time.perf_counter() - t_ep)
            pre_done = ep + 1
            checkpoint(start_epoch, pre_done)

    # ---- 2+3. notes: multi-label loss + guideline contrast
    # the projections learned by the alignment move slowly on 500 notes (they collapse otherwise);
    # the weights that combine zero-shot, supervised and memory scores learn at the full rate
    for group in optimizer.param_groups:
        if group.get("name") == "projections":
            group["lr"] = tcfg.lr * tcfg.note_projection_lr_scale
        else:
            group["lr"] = tcfg.lr * tcfg.note_calibration_lr_scale
    model_hard: list[list[int]] | None = None
    for epoch in range(start_epoch, tcfg.epochs):
        t_ep = time.perf_counter()
        pool = (
            hard
            if model_hard is None
            else [
                a[: tcfg.hard_pool // 2] + b[: tcfg.hard_pool // 2]
                for a, b in zip(hard, model_hard, strict=True)
            ]
        )
        loss = _run_note_epoch(
            model,
            optimizer,
            coder,
            enc_train,
            pool,
            neighbours,
            guides,
            tcfg,
            epoch,
            rank,
            world,
            show_progress_bar,
        )
        entry: dict[str, Any] = {"stage": "notes", "epoch": epoch + 1, "loss": loss}
        last = epoch + 1 == tcfg.epochs
        if last or (tcfg.eval_every and (epoch + 1) % tcfg.eval_every == 0):
            coder.finalize()
            if tcfg.refresh_hard:
                model_hard = _model_top(coder, enc_train, tcfg.hard_pool)
            logits = score_encoded(coder, enc_dev)
            thr, _ = tune_threshold(torch.sigmoid(logits).numpy(), gold_matrix(enc_dev, len(coder.labels)))
            m = evaluate_coder(coder, enc_dev, threshold=thr, logits=logits)
            entry.update(
                {
                    "dev_map": m["map"],
                    "dev_micro_f1": m["micro_f1"],
                    "dev_r@10": m["r@10"],
                    "dev_unseen_r@10": (m["buckets"].get("unseen") or {}).get("r@10"),
                    "threshold": thr,
                }
            )
            if m["map"] > best_map:
                best_map = m["map"]
                best_state = {k: v.detach().clone() for k, v in coder.trainable_state_dict().items()}
                entry["best"] = True
        entry["seconds"] = round(time.perf_counter() - t_ep, 1)
        history.append(entry)
        logger.info(
            "epoch %d: %s",
            epoch + 1,
            {k: (round(v, 4) if isinstance(v, float) else v) for k, v in entry.items()},
        )
        checkpoint(epoch + 1, pre_done)

    # ---- keep the best epoch, tune the threshold on dev
    if best_state is not None:
        coder.load_trainable_state_dict(best_state)
    coder.finalize()
    lexicon_card: dict[str, Any] | None = None
    if coder.lexicon is not None and tcfg.tune_lexicon:
        t0 = time.perf_counter()
        totals = coder.fit_lexicon(enc_train.segments, enc_train.gold)
        weight, prior, lex_sweep = tune_lexicon(lexicon_sweep(coder, enc_dev, tcfg))
        coder.config.lexical_weight, coder.config.lexical_prior = weight, prior
        lexicon_card = {
            "names": coder.lexicon.num_names,
            "training_matches": totals,
            "weight": weight,
            "prior": prior,
            "min_coverage": coder.config.lexical_min_coverage,
            "sweep": lex_sweep,
            "tuned_on": "dev",
        }
        logger.info(
            "dictionary match: weight %.2f, prior %.2f (tuned on dev) in %.1f s",
            weight,
            prior,
            time.perf_counter() - t0,
        )
    dev_logits = score_encoded(coder, enc_dev)
    unseen_sweep: list[dict[str, float]] = []
    if tcfg.tune_unseen_bias and bool(coder.unseen_mask.any()):
        base = float(coder.config.unseen_bias or 0.0)
        raw = dev_logits - base * coder.unseen_mask.float()
        chosen, unseen_sweep = tune_unseen_bias(raw, enc_dev.gold, coder.unseen_mask, tcfg)
        coder.config.unseen_bias = chosen
        dev_logits = raw + chosen * coder.unseen_mask.float()
        logger.info("unseen-code logit offset %.2f (tuned on dev)", chosen)
    reranker_card: dict[str, Any] | None = None
    if tcfg.rerank_folds:
        thr0 = _best_threshold(dev_logits, enc_dev, coder, tcfg.threshold_top_k)
        before = _round(evaluate_coder(coder, enc_dev, logits=dev_logits, threshold=thr0))
        reranker_card = fit_reranker(coder, prepared, cfg, tcfg, show_progress_bar=show_progress_bar)
        reranker_card["dev_metrics_without_reranker"] = before
        dev_logits = tune_reranked_unseen_bias(coder, enc_dev, tcfg, reranker_card)
    dev_probs = torch.sigmoid(dev_logits).numpy()
    gold = gold_matrix(enc_dev, len(coder.labels))
    threshold, _ = tune_threshold(dev_probs, gold, top_k=tcfg.threshold_top_k)
    coder.threshold = threshold
    metrics = evaluate_coder(coder, enc_dev, threshold=threshold, logits=dev_logits)
    zs = (
        evaluate_coder(coder, enc_dev, part="zero_shot", threshold=1.0)
        if hasattr(coder.fusion, "zero_shot")
        else None
    )
    seconds = time.perf_counter() - t_start
    coder.card = {
        "training_data": {
            "train": full_config["metadata"]["train"],
            "dev": full_config["metadata"]["dev"],
            "train_report": tr_report,
            "dev_report": dv_report,
            "train_distinct_codes": len(counts),
        },
        "dev_metrics": _round(metrics),
        "dev_metrics_zero_shot_part": _round(zs) if zs else None,
        "threshold": threshold,
        "threshold_tuned_on": "dev",
        "unseen_bias": coder.config.unseen_bias,
        "unseen_bias_sweep": unseen_sweep,
        "lexicon": lexicon_card,
        "reranker": reranker_card,
        "seed": tcfg.seed,
        "training_seconds": round(seconds, 1),
        "world_size": world,
        "history": _round(history),
        "config": full_config,
        "encoder_frozen": True,
    }
    if owns_group:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    logger.info(
        "training done in %.1f s: dev MAP %.4f, micro-F1 %.4f at threshold %.3f",
        seconds,
        metrics["map"],
        metrics["micro_f1"],
        threshold,
    )
    return TrainResult(coder=coder, metrics=metrics, history=history, config=full_config, seconds=seconds)


def _best_threshold(logits: Tensor, encoded: EncodedNotes, coder: Coder, top_k: int | None = None) -> float:
    """The dev-tuned threshold of these logits, as :func:`train` chooses it."""
    from kgcode.metrics import tune_threshold

    probs = torch.sigmoid(logits).numpy()
    thr, _ = tune_threshold(probs, gold_matrix(encoded, len(coder.labels)), top_k=top_k)
    return float(thr)


def relation_table(kg: KnowledgeGraph, labels: Sequence[str]) -> RelationTable:
    """The KG's links between labels that the reranker's relation features read.

    Args:
        kg: the knowledge graph.
        labels: the label ids, in row order.

    Returns:
        The table: the ``is_a`` ancestry of the labels, the notes of each group of
        :data:`fusion.rerank.RELATION_GROUPS`, the ICD-9-CM codes the GEMs link each label to
        (either direction), and how many DO / Mondo concepts cross-reference each label.
    """
    graph = kg.graph
    system = labels[0].partition(":")[0] + ":" if labels else ""
    parents: dict[str, list[str]] = {}
    notes: dict[str, dict[str, list[str]]] = {g: {} for g in RELATION_GROUPS}
    group_of = {rel: g for g, rels in RELATION_GROUPS.items() for rel in rels}
    gem: dict[str, set[str]] = {}
    xrefs: dict[str, int] = {}
    for src, dst, rel in graph.edges(keys=True):
        if rel == "is_a" and src.startswith(system):
            parents.setdefault(src, []).append(dst)
        elif rel in group_of and src.startswith(system):
            notes[group_of[rel]].setdefault(src, []).append(dst)
        elif rel == "gem_equivalent":
            if src.startswith(system) and not dst.startswith(system):
                gem.setdefault(src, set()).add(dst)
            elif dst.startswith(system) and not src.startswith(system):
                gem.setdefault(dst, set()).add(src)
        elif rel == "xref" and dst.startswith(system) and src.startswith(("DOID:", "MONDO:")):
            xrefs[dst] = xrefs.get(dst, 0) + 1
    return RelationTable.build(labels, parents, notes, {k: sorted(v) for k, v in gem.items()}, xrefs)


@torch.no_grad()
def candidate_rows(
    coder: Coder,
    encoded: EncodedNotes,
    *,
    batch_size: int = 16,
    relations: RelationTable | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The reranker's training rows: each note's candidates (see :func:`fusion.rerank.candidate_features`).

    Args:
        coder: a finalized coder without a reranker (its scores are the ``logit`` feature).
        encoded: notes the coder never trained on, with their gold codes.
        batch_size: notes per scoring batch.
        relations: the KG's links; given, the rows go on with the relation features.

    Returns:
        ``(features, targets)``: one row per (note, candidate), target 1 for a gold code.

    Shapes:
        features: ``(n, f)`` float32 (``f = len(FEATURES)``, plus ``len(RELATION_FEATURES)`` with
        ``relations``); targets: ``(n,)`` bool.
    """
    from fusion.rerank import candidate_features

    xs, ys = [], []
    reliability = coder.lexical_reliability() if coder.lexicon is not None else torch.zeros(len(coder.labels))
    for start in range(0, len(encoded), batch_size):
        segs = encoded.segments[start : start + batch_size]
        logits, _ = coder.score_notes(segs)
        vec, mask = coder.pad_segments(segs)
        zs = coder.zero_shot_max(vec, mask)
        cov = coder.lexical_match(segs)[0] if coder.lexicon is not None else torch.zeros_like(logits)
        cands = candidate_features(
            logits,
            zs,
            cov,
            reliability,
            coder.label_table,
            top_k=int(coder.config.rerank_candidates),
            unseen_k=int(coder.config.rerank_unseen_candidates),
            rare_k=int(coder.config.rerank_rare_candidates),
            relations=relations,
        )
        for (rows, feats), gold in zip(cands, encoded.gold[start : start + batch_size], strict=True):
            xs.append(feats)
            ys.append(np.isin(rows.numpy(), np.asarray(list(gold), dtype=np.int64)))
    if not xs:
        width = len(RERANK_FEATURES) + (len(RELATION_FEATURES) if relations is not None else 0)
        return np.zeros((0, width), dtype=np.float32), np.zeros(0, dtype=bool)
    return np.concatenate(xs), np.concatenate(ys)


def tune_reranked_unseen_bias(
    coder: Coder, encoded: EncodedNotes, tcfg: TrainConfig, card: dict[str, Any] | None = None
) -> Tensor:
    """Choose the unseen-code offset after the reranker on dev (:func:`tune_unseen_bias`'s rule).

    Args:
        coder: a coder with its reranker (``config.reranked_unseen_bias`` is set).
        encoded: the dev notes.
        tcfg: the grid and tolerances (``tune_unseen_bias`` off: the offset stays 0).
        card: the reranker's model-card entry, given the offset and its sweep.

    Returns:
        The dev logits with the chosen offset.

    Shapes:
        output: ``(len(encoded), num_labels)``.
    """
    coder.config.reranked_unseen_bias = 0.0
    raw = score_encoded(coder, encoded)
    if not (tcfg.tune_unseen_bias and bool(coder.unseen_mask.any())):
        return raw
    chosen, sweep = tune_unseen_bias(raw, encoded.gold, coder.unseen_mask, tcfg)
    coder.config.reranked_unseen_bias = chosen
    logger.info("unseen-code logit offset after the reranker %.2f (tuned on dev)", chosen)
    if card is not None:
        card["unseen_bias"] = chosen
        card["unseen_bias_sweep"] = sweep
    return raw + chosen * coder.unseen_mask.float()


def fit_reranker(
    coder: Coder,
    prepared: Prepared,
    cfg: CoderConfig,
    tcfg: TrainConfig,
    *,
    show_progress_bar: bool | None = None,
) -> dict[str, Any]:
    """Cross-fit the stacked candidate reranker on the training notes and attach it to ``coder``.

    The training notes are cut into ``tcfg.rerank_folds`` folds. For each, a coder is trained on
    the other folds with the same settings (and the dictionary weight, prior and unseen-code
    offset already chosen for ``coder``) and scores the fold: its candidates, as a coder sees notes
    it never trained on, with the codes of that fold missing from its training notes playing the
    unseen codes. Boosted trees (:class:`fusion.rerank.TreeEnsemble`) are fitted on all folds'
    candidates, with the KG's relation features when ``cfg.rerank_relations`` is on. Trees with
    the other feature set are fitted on the same rows too and scored on dev (offset and threshold
    tuned as for the kept trees), so every model card measures what the relation features add.

    Args:
        coder: the trained, finalized main coder (tuned dictionary and offset).
        prepared: the prepared data it was trained on.
        cfg: its model configuration.
        tcfg: the training configuration (``rerank_*``).
        show_progress_bar: progress of the fold trainings.

    Returns:
        The model card's ``reranker`` entry (folds, rows, candidate recall, settings, seconds,
        and ``other_features``: the dev metrics of the trees with the other feature set).

    Raises:
        ValueError: fewer than two folds, or fewer training notes than folds.
    """
    import dataclasses
    from collections import Counter

    t0 = time.perf_counter()
    enc = prepared.enc_train
    k = int(tcfg.rerank_folds)
    if k < 2 or len(enc) < k:
        raise ValueError(f"rerank_folds={k}: expected at least 2 folds and as many training notes")
    fold = np.random.default_rng(tcfg.seed).permutation(len(enc)) % k
    sub_cfg = CoderConfig.from_dict(
        {
            **cfg.to_dict(),
            "lexical_weight": coder.config.lexical_weight,
            "lexical_prior": coder.config.lexical_prior,
            "unseen_bias": coder.config.unseen_bias,
        }
    )
    sub_tcfg = dataclasses.replace(tcfg, rerank_folds=0, tune_lexicon=False, tune_unseen_bias=False)
    t_rel = time.perf_counter()
    relations = relation_table(prepared.kg, coder.labels)
    logger.info("reranker: the KG's links between labels in %.1f s", time.perf_counter() - t_rel)
    xs, ys, folds_card = [], [], []
    for f in range(k):
        train_idx = [i for i in range(len(enc)) if fold[i] != f]
        held_idx = [i for i in range(len(enc)) if fold[i] == f]
        enc_tr = enc.subset(train_idx)
        counts = Counter(prepared.labels[r] for rows in enc_tr.gold for r in set(rows))
        sub = dataclasses.replace(
            prepared,
            enc_train=enc_tr,
            counts=dict(counts),
            hard=[prepared.hard[i] for i in train_idx],
            guides=[prepared.guides[i] for i in train_idx],
        )
        logger.info("reranker fold %d/%d: training a coder on %d notes", f + 1, k, len(train_idx))
        sub_coder = train(
            config=sub_cfg, training=sub_tcfg, prepared=sub, show_progress_bar=show_progress_bar
        ).coder
        if sub_coder.lexicon is not None:
            sub_coder.fit_lexicon(enc_tr.segments, enc_tr.gold)
        held = enc.subset(held_idx)
        x, y = candidate_rows(sub_coder, held, relations=relations)
        n_gold = sum(len(set(g)) for g in held.gold)
        unseen_gold = sum(int(sub_coder.unseen_mask[list(set(g))].sum()) for g in held.gold if g)
        unseen_hit = int((y & (x[:, RERANK_FEATURES.index("seen")] == 0)).sum()) if len(x) else 0
        folds_card.append(
            {
                "notes": len(held_idx),
                "candidates": int(len(y)),
                "gold_in_candidates": round(float(y.sum()) / max(1, n_gold), 4),
                "unseen_gold_in_candidates": round(unseen_hit / max(1, unseen_gold), 4),
            }
        )
        xs.append(x)
        ys.append(y)
    x, y = np.concatenate(xs), np.concatenate(ys)
    with_rel = RERANK_FEATURES + RELATION_FEATURES

    def fit(features: tuple[str, ...]) -> TreeEnsemble:
        return TreeEnsemble.fit(
            x[:, : len(features)],
            y,
            features=features,
            max_iter=tcfg.rerank_trees,
            learning_rate=tcfg.rerank_learning_rate,
            max_leaf_nodes=tcfg.rerank_leaves,
            min_samples_leaf=tcfg.rerank_min_leaf,
            seed=tcfg.seed,
        )

    keep, other = (with_rel, RERANK_FEATURES) if cfg.rerank_relations else (RERANK_FEATURES, with_rel)
    other_card = _other_reranker_metrics(coder, prepared.enc_dev, tcfg, fit(other), relations)
    other_card["relation_features"] = not cfg.rerank_relations
    coder.reranker = fit(keep)
    coder.relations = relations if cfg.rerank_relations else None
    seconds = time.perf_counter() - t0
    logger.info(
        "candidate reranker: %d trees on %d candidates (%d gold) from %d folds in %.1f s",
        coder.reranker.num_trees,
        len(y),
        int(y.sum()),
        k,
        seconds,
    )
    return {
        "kind": "boosted_trees",
        "folds": folds_card,
        "rows": int(len(y)),
        "positives": int(y.sum()),
        "trees": coder.reranker.num_trees,
        "settings": {
            "trees": tcfg.rerank_trees,
            "learning_rate": tcfg.rerank_learning_rate,
            "leaves": tcfg.rerank_leaves,
            "min_leaf": tcfg.rerank_min_leaf,
            "candidates": coder.config.rerank_candidates,
            "unseen_candidates": coder.config.rerank_unseen_candidates,
            "rare_candidates": coder.config.rerank_rare_candidates,
        },
        "trained_on": "training notes, cross-fitted",
        "relation_features": bool(cfg.rerank_relations),
        "other_features": other_card,
        "seconds": round(seconds, 1),
    }


def _other_reranker_metrics(
    coder: Coder, encoded: EncodedNotes, tcfg: TrainConfig, trees: TreeEnsemble, relations: RelationTable
) -> dict[str, Any]:
    """Dev metrics of ``coder`` with other reranker trees (offset and threshold tuned as usual).

    The coder is left as it was (no reranker while training, its config unchanged).
    """
    saved = (coder.reranker, coder.relations, coder.config.reranked_unseen_bias)
    coder.reranker, coder.relations = trees, relations
    card: dict[str, Any] = {}
    try:
        logits = tune_reranked_unseen_bias(coder, encoded, tcfg, card)
        threshold = _best_threshold(logits, encoded, coder, tcfg.threshold_top_k)
        metrics = evaluate_coder(coder, encoded, logits=logits, threshold=threshold)
    finally:
        coder.reranker, coder.relations, coder.config.reranked_unseen_bias = saved
    return {
        "dev_metrics": _round(metrics),
        "threshold": threshold,
        "unseen_bias": card.get("unseen_bias", 0.0),
    }


def _guidelines(
    coder: Coder, kg: KnowledgeGraph, encoded: EncodedNotes, *, parents: bool = True
) -> list[Tensor]:
    """Per training note, its synthetic guideline: gold codes' texts and (``parents``) their parents'."""
    text = coder.code_text
    graph = kg.graph
    out = []
    for gold in encoded.gold:
        rows = list(gold)
        for r in gold if parents else ():
            code = coder.labels[r]
            rows.extend(
                coder.label_row[p]
                for p, keys in graph._succ[code].items()
                if "is_a" in keys and p in coder.label_row
            )
        rows = list(dict.fromkeys(rows))
        out.append(text[torch.tensor(rows, dtype=torch.long)] if rows else torch.zeros(0, coder.text_dim))
    return out


def _shard(n: int, rank: int, world: int, rng: random.Random) -> list[int]:
    order = list(range(n))
    rng.shuffle(order)
    per = math.ceil(n / world)
    order = (order * (1 + (per * world) // max(1, n)))[: per * world]  # pad so every rank has as many
    return order[rank::world]


def _bar(it: Any, show: bool | None, desc: str, rank: int) -> Any:
    from text_encoder.hf import show_progress

    if rank == 0 and show_progress(show):
        from tqdm.auto import tqdm

        return tqdm(it, desc=desc, unit="step", leave=False)
    return it


def _run_align_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    anchors: Tensor,
    rows: Tensor,
    n_graph: int,
    nb: _Neighbours,
    cfg: TrainConfig,
    epoch: int,
    rank: int,
    world: int,
    show: bool | None,
) -> float:
    """One epoch of InfoNCE: every sentence pair ``sentence_pair_repeats`` times, graph pairs sampled."""
    model.train()
    rng = random.Random(cfg.seed * 1000 + 7 + epoch)
    sentences = list(range(n_graph, len(rows))) * max(1, cfg.sentence_pair_repeats)
    graph = list(range(n_graph))
    rng.shuffle(graph)
    idx = sentences + graph[: max(0, cfg.pretrain_max_pairs - len(sentences))]
    rng.shuffle(idx)
    mine = (
        _shard(len(idx), rank, world, random.Random(cfg.seed + epoch)) if world > 1 else list(range(len(idx)))
    )
    idx = [idx[i] for i in mine]
    total, steps = 0.0, 0
    for start in _bar(range(0, len(idx), cfg.pretrain_batch), show, "align", rank):
        batch = torch.tensor(idx[start : start + cfg.pretrain_batch])
        if len(batch) < 2:
            continue
        pos_rows = rows[batch].tolist()
        cand: dict[int, None] = dict.fromkeys(pos_rows)
        for r in pos_rows:
            hard = nb.near[r][:4] + nb.excludes[r][:2]
            cand.update(dict.fromkeys(hard))
        cand_rows = list(cand)
        col = {r: i for i, r in enumerate(cand_rows)}
        loss = model(
            "align",
            anchors=anchors[batch],
            rows=rows[batch],
            candidates=torch.tensor(cand_rows),
            positive=torch.tensor([col[r] for r in pos_rows]),
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach().item()
        steps += 1
    return total / max(1, steps)


def _run_note_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    coder: Coder,
    enc: EncodedNotes,
    hard: list[list[int]],
    nb: _Neighbours,
    guides: list[Tensor],
    cfg: TrainConfig,
    epoch: int,
    rank: int,
    world: int,
    show: bool | None,
) -> float:
    model.train()
    rng = random.Random(cfg.seed * 7919 + epoch)
    order = _shard(len(enc), rank, world, rng)
    n_labels = len(coder.labels)
    total, steps = 0.0, 0
    for start in _bar(range(0, len(order), cfg.batch_size), show, f"epoch {epoch + 1}", rank):
        idx = order[start : start + cfg.batch_size]
        cand: dict[int, None] = {}
        for i in idx:
            gold = enc.gold[i]
            cand.update(dict.fromkeys(gold))
            pool = [r for r in hard[i] if r not in set(gold)]
            cand.update(dict.fromkeys(rng.sample(pool, min(cfg.n_hard, len(pool)))))
            near = sorted({r for g in gold for r in nb.near[g]})
            cand.update(dict.fromkeys(rng.sample(near, min(cfg.n_neighbours, len(near)))))
        cand.update(dict.fromkeys(rng.sample(range(n_labels), min(cfg.n_random, n_labels))))
        cand_rows = list(cand)
        col = {r: j for j, r in enumerate(cand_rows)}
        targets = torch.zeros(len(idx), len(cand_rows))
        gold_note, gold_col = [], []
        for b, i in enumerate(idx):
            for r in enc.gold[i]:
                targets[b, col[r]] = 1.0
                gold_note.append(b)
                gold_col.append(col[r])
        vec, mask = coder.pad_segments([enc.segments[i] for i in idx])
        gl = [guides[i] for i in idx]
        width = max(1, max(len(g) for g in gl))
        guide = torch.zeros(len(idx), width, coder.text_dim)
        guide_mask = torch.zeros(len(idx), width, dtype=torch.bool)
        for b, g in enumerate(gl):
            guide[b, : len(g)] = g
            guide_mask[b, : len(g)] = True
        loss = model(
            "notes",
            vectors=vec,
            mask=mask,
            candidates=torch.tensor(cand_rows),
            targets=targets,
            guide=guide,
            guide_mask=guide_mask,
            gold_note=torch.tensor(gold_note, dtype=torch.long),
            gold_col=torch.tensor(gold_col, dtype=torch.long),
            note_idx=torch.tensor(idx, dtype=torch.long),
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach().item()
        steps += 1
    return total / max(1, steps)


def history_json(result: TrainResult) -> str:
    """The training history as JSON (for logs)."""
    return json.dumps(_round(result.history))
