"""Probe: reranker candidate pools on dev (rare codes; unseen codes by their best name).

Before the candidate reranker, the coder with the graph encoder ranks codes with 1-5 training
notes better than the text-only coder at deep ranks (CodiEsp dev: 78 % of their gold mentions
within the top 100 against 75 %), but the reranker sees only each note's top 60 by score plus
the unseen-code pools. This probe adds the ``rare_k`` best-scored codes with 1-5 training notes
(:func:`fusion.rerank.candidate_features`, ``rerank_rare_candidates``) and measures, for every
seed of ``bench/bench_coder.py``'s ``full`` and ``text_only`` models, the dev metrics of trees
cross-fitted on dev itself (5 folds of notes; the models' own trees were fitted on cross-fitted
*training* notes, which would need every fold model retrained). Only the pools change between
rows, so the differences, not the levels, are the result. A probe for design decisions, on dev.

Second (``unseen_best_name``): the full models with the unseen-code pool and two more features
taken from each code's best *name* (each name embedded on its own, see
``bench/bench_unseen_signals.py``) instead of the joined code text alone, as an offset after the
trees trades MAP for unseen R@10 (0, 1, 2). This probe led to ``CoderConfig.zero_shot_names`` (on by
default since): its numbers in the README come from coders trained before it, whose zero-shot
maximum read the joined code text; for a coder with code names the ``code_text`` side already reads
the names, so the comparison then measures the two extra tree features alone.

Run: ``.venv/bin/python bench/bench_rerank_probe.py [--rare 0,40,80] [--no-names]`` (about 15 minutes
on 2 cores).
Writes ``bench/results/rerank_probe.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from results_io import write_result

logger = logging.getLogger("bench.rerank_probe")
ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("KGCODE_DATA_DIR", ROOT.parent / "shared" / "data")) / "codiesp"
MODELS = ROOT / ".cache" / "bench-models"
PAIRS = (("full", "text_only"), ("full_seed14", "text_only_seed14"), ("full_seed15", "text_only_seed15"))
METRICS = ("map", "micro_f1", "1-5_f1", "1-5_r@10", "unseen_r@10")
OFFSETS = (0.0, 1.0, 2.0)  # unseen-code offsets of the best-name frontier


def dev_candidates(name: str, rare_k: int, relations: Any, names: Any = None) -> dict[str, Any]:
    """A coder's dev candidates without its reranker (features, rows, gold, base scores).

    ``names`` (:func:`bench_unseen_signals.names_each`'s vectors and label rows): the zero-shot
    signal that picks the unseen candidates becomes the better of the code text's cosine and the
    best name's, and each candidate gets two more columns (its best-name cosine, and that minus
    the note's best).
    """
    from fusion.rerank import candidate_features
    from kgcode import paths
    from kgcode.coder import Coder
    from kgcode.datasets import read_dataset
    from kgcode.training import encode_notes, prepare_notes

    coder = Coder.load(MODELS / name)
    coder.reranker, coder.relations = None, None
    notes, _ = prepare_notes(read_dataset(DATA / "dev")[0], coder.label_row)
    enc = encode_notes(coder, notes, cache_dir=paths.cache_dir() / "embeddings", show_progress_bar=False)
    reliability = coder.lexical_reliability()
    rows, xs, logits = [], [], []
    with torch.no_grad():
        for start in range(0, len(enc), 16):
            segs = enc.segments[start : start + 16]
            lg, _ = coder.score_notes(segs)
            vec, mask = coder.pad_segments(segs)
            zs = coder.zero_shot_max(vec, mask)
            if names is not None:
                from bench_unseen_signals import best_name

                best = torch.stack([best_name(seg.vectors, *names, len(coder.labels)) for seg in segs])
                zs = torch.maximum(zs, best)
            cands = candidate_features(
                lg,
                zs,
                coder.lexical_match(segs)[0],
                reliability,
                coder.label_table,
                top_k=int(coder.config.rerank_candidates),
                unseen_k=int(coder.config.rerank_unseen_candidates),
                rare_k=rare_k,
                relations=relations,
            )
            for i, (r, x) in enumerate(cands):
                if names is not None:
                    extra = torch.stack([best[i, r], best[i, r] - best[i].max()], dim=1).numpy()
                    x = np.hstack([x, extra.astype(np.float32)])
                rows.append(r.numpy())
                xs.append(x)
                logits.append(lg[i].numpy())
    return {
        "rows": rows,
        "x": xs,
        "logits": np.stack(logits),
        "gold": enc.gold,
        "train_counts": np.asarray(coder.train_counts),
        "relations": coder.config.rerank_relations,
    }


def dev_cv(
    d: dict[str, Any], columns: int | list[int], *, folds: int = 5, seed: int = 13, offset: float = 0.0
) -> dict[str, float]:
    """Trees cross-fitted over dev notes (the benchmarked tree settings); dev metrics of the result.

    ``columns``: the first ``columns`` features, or these feature columns; ``offset``: added to
    the final logits of the codes without training notes.
    """
    columns = list(range(columns)) if isinstance(columns, int) else columns
    from fusion.rerank import TreeEnsemble
    from kgcode.metrics import evaluate, tune_threshold

    n = len(d["rows"])
    fold = np.random.default_rng(0).permutation(n) % folds
    ys = [np.isin(r, np.asarray(list(g), dtype=np.int64)) for r, g in zip(d["rows"], d["gold"], strict=True)]
    scores: list[np.ndarray] = [np.zeros(0)] * n
    for f in range(folds):
        train = [i for i in range(n) if fold[i] != f]
        trees = TreeEnsemble.fit(
            np.concatenate([d["x"][i][:, columns] for i in train]),
            np.concatenate([ys[i] for i in train]),
            features=tuple(f"f{j}" for j in columns),
            max_iter=200,
            learning_rate=0.05,
            max_leaf_nodes=15,
            min_samples_leaf=40,
            seed=seed,
        )
        for i in range(n):
            if fold[i] == f:
                scores[i] = trees.decision_function(d["x"][i][:, columns])
    logits = d["logits"].copy()
    gold = np.zeros(logits.shape, dtype=bool)
    for i in range(n):
        rest = np.ones(logits.shape[1], dtype=bool)
        rest[d["rows"][i]] = False
        logits[i] = logits[i] - logits[i, rest].max() + (scores[i].min() - 1.0)
        logits[i, d["rows"][i]] = scores[i]
        gold[i, list(d["gold"][i])] = True
    logits = logits + offset * (d["train_counts"] == 0)
    probs = 1.0 / (1.0 + np.exp(-logits))
    threshold, _ = tune_threshold(probs, gold)
    m = evaluate(probs, gold, threshold=threshold, train_counts=d["train_counts"])
    b = m["buckets"]
    return {
        "map": m["map"],
        "micro_f1": m["micro_f1"],
        "1-5_f1": b["1-5"]["f1"],
        "1-5_r@10": b["1-5"]["r@10"],
        "unseen_r@10": b["unseen"]["r@10"],
        "candidates_per_note": float(np.mean([len(r) for r in d["rows"]])),
    }


def best_name_frontier(models: list[str], kg: Any, relations: Any) -> dict[str, Any]:
    """The full models' dev-CV frontier with the unseen pool and two features from the best name.

    Returns:
        Per model and code side (``code_text``: as trained; ``best_name``: see
        :func:`dev_candidates`), MAP, micro-F1 and unseen R@10 at each offset of :data:`OFFSETS`.
    """
    from bench_unseen_signals import names_each

    from fusion.rerank import FEATURES, RELATION_FEATURES
    from kgcode import paths
    from kgcode.coder import Coder

    names = names_each(kg, Coder.load(MODELS / models[0]), paths.cache_dir() / "embeddings")
    out: dict[str, Any] = {"offsets": list(OFFSETS), "note": "unseen offset added after the dev-CV trees"}
    base = list(range(len(FEATURES) + len(RELATION_FEATURES)))
    for name in models:
        for side, given in (("code_text", None), ("best_name", names)):
            d = dev_candidates(name, 0, relations, given)
            width = d["x"][0].shape[1]
            cols = base + ([width - 2, width - 1] if given is not None else [])
            out[f"{name}/{side}"] = {
                str(o): {k: round(v, 4) for k, v in dev_cv(d, cols, offset=o).items() if k in METRICS}
                for o in OFFSETS
            }
            logger.info("%s %s: %s", name, side, out[f"{name}/{side}"])
    return out


def main() -> int:
    """Dev-CV of each model with each rare pool; the full - text-only margins; write the JSON."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rare", default="0,40,80", help="rare pool sizes, comma-separated")
    ap.add_argument("--no-names", action="store_true", help="skip the best-name unseen-code pool")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "rerank_probe.json")
    args = ap.parse_args()
    pairs = [p for p in PAIRS if all((MODELS / m / "config.json").is_file() for m in p)]
    if not pairs or not (DATA / "dev").is_dir() or not (MODELS / "kg").is_dir():
        logger.warning("no bench models in %s or no CodiEsp dev in %s: skipping", MODELS, DATA)
        return 0
    from fusion.rerank import FEATURES, RELATION_FEATURES
    from kg import load_kg
    from kgcode.training import relation_table

    kg = load_kg(MODELS / "kg")
    rare_ks = [int(k) for k in args.rare.split(",")]
    result: dict[str, Any] = {"method": "trees cross-fitted on 5 folds of the dev notes", "rows": {}}
    relations = None
    for full, text in pairs:
        for rare_k in rare_ks:
            for name in (full, text):
                t0 = time.perf_counter()
                if relations is None:
                    from kgcode.coder import Coder

                    relations = relation_table(kg, Coder.load(MODELS / name).labels)
                d = dev_candidates(name, rare_k, relations)
                columns = len(FEATURES) + (len(RELATION_FEATURES) if d["relations"] else 0)
                row = {k: round(v, 4) for k, v in dev_cv(d, columns).items()}
                result["rows"][f"{name}/rare{rare_k}"] = row
                logger.info("%s rare %d: %s (%.0f s)", name, rare_k, row, time.perf_counter() - t0)
    margins: dict[str, Any] = {}
    for rare_k in rare_ks:
        rows = result["rows"]
        per_seed = [
            {k: rows[f"{f}/rare{rare_k}"][k] - rows[f"{t}/rare{rare_k}"][k] for k in METRICS}
            for f, t in pairs
        ]
        margins[f"rare{rare_k}"] = {
            k: {
                "mean": round(float(np.mean([s[k] for s in per_seed])), 4),
                "per_seed": [round(s[k], 4) for s in per_seed],
            }
            for k in METRICS
        }
    result["margin_full_minus_text_only"] = margins
    if not args.no_names:
        result["unseen_best_name"] = best_name_frontier([f for f, _ in pairs], kg, relations)
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
