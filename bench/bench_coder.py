"""Benchmark: the coder on CodiEsp dev (trained on train only) -> ``bench/results/coder.json``.

What it measures (issue 3):

* quality on CodiEsp dev (English): MAP, micro-P/R/F1 at the threshold tuned on dev, macro-F1 in both
  conventions, P@5/8/15, R@10/50 and F1 / R@10 by training-frequency bucket (unseen, 1-5, 6-20, >20);
* an ablation side by side: the full model (``configs/coder.yaml``), text-only (no graph encoder),
  no contrastive pre-training, no dictionary match, the zero-shot path alone, the dictionary match
  alone, and TF-IDF + one-vs-rest logistic regression (scikit-learn); the dictionary match's
  dev-tuned weight is cross-fitted on dev halves to show how much the tuning flatters dev;
* performance: training time, model load time, ``predict`` notes/s end to end (all labels scored,
  evidence included) and the encoder alone on the same notes in the same process, peak RSS of the
  prediction process, and the quality change of bf16 inference against fp32.

Every training run reads only ``train`` and selects epoch and threshold on ``dev``; the CodiEsp test
split is not used. Run: ``python bench/bench_coder.py`` (``--quick`` for a short smoke run;
``--only full,tfidf`` to run some variants; ``--reuse`` keeps trained models from an earlier run).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger("bench.coder")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MODELS = ROOT / ".cache" / "bench-models"
DATA = ROOT.parent / "shared" / "data" / "codiesp"
KEYS = (
    "map",
    "micro_precision",
    "micro_recall",
    "micro_f1",
    "macro_f1",
    "macro_f1_present",
    "p@5",
    "p@8",
    "p@15",
    "r@10",
    "r@50",
    "threshold",
)


def _slim(m: dict[str, Any]) -> dict[str, Any]:
    out = {k: round(float(m[k]), 4) for k in KEYS if k in m}
    out["buckets"] = {
        label: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in b.items()}
        for label, b in m.get("buckets", {}).items()
    }
    return out


def _kg(path: str | None) -> Any:
    from kg import load_kg, save_kg
    from kgcode import paths
    from kgcode.pipeline import build_default_kg

    if path:
        return load_kg(path)
    default = MODELS / "kg"
    if not (default / "manifest.json").is_file():
        save_kg(build_default_kg(paths.default_data_dir(), progress=False).kg, default)
    return load_kg(default)


# --------------------------------------------------------------------------- TF-IDF baseline


def tfidf_baseline(kg: Any, seed: int = 13) -> dict[str, Any]:
    """TF-IDF (1-2 grams) + one-vs-rest logistic regression on the codes seen in train."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.preprocessing import MultiLabelBinarizer

    from kgcode.coder import label_codes
    from kgcode.datasets import code_counts, read_dataset
    from kgcode.metrics import evaluate, tune_threshold
    from kgcode.training import prepare_notes

    start = time.perf_counter()
    labels = label_codes(kg)
    row = {c: i for i, c in enumerate(labels)}
    train, _ = prepare_notes(read_dataset(DATA / "train")[0], row)
    dev, _ = prepare_notes(read_dataset(DATA / "dev")[0], row)
    vec = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=2, max_features=100_000)
    x_train = vec.fit_transform([n.text for n in train])
    mlb = MultiLabelBinarizer()
    y = mlb.fit_transform([n.codes for n in train])
    clf = OneVsRestClassifier(LogisticRegression(C=10.0, max_iter=1000, random_state=seed), n_jobs=1)
    clf.fit(x_train, y)
    probs = clf.predict_proba(vec.transform([n.text for n in dev]))
    scores = np.zeros((len(dev), len(labels)), dtype=np.float64)
    scores[:, [row[c] for c in mlb.classes_]] = probs
    gold = np.zeros_like(scores, dtype=bool)
    for i, n in enumerate(dev):
        gold[i, [row[c] for c in n.codes]] = True
    thr, _ = tune_threshold(scores, gold)
    counts = code_counts(train)
    m = evaluate(scores, gold, threshold=thr, train_counts=np.array([counts.get(c, 0) for c in labels]))
    out = _slim(m)
    out["seconds"] = round(time.perf_counter() - start, 1)
    out["note"] = "codes unseen in train get probability 0 (the model has no output for them)"
    return out


# --------------------------------------------------------------------------- coder variants


def variants(config: Path, quick: bool, seeds: Sequence[int] = ()) -> dict[str, dict[str, Any]]:
    """The ablation: overrides of the benchmarked config (``seeds``: more seeds of full and text-only)."""
    from kgcode.training import load_config_file

    model, training, _ = load_config_file(config)
    base_model, base_train = model.to_dict(), dict(training.__dict__)
    if quick:
        base_train.update(epochs=1, pretrain_epochs=1, pretrain_max_pairs=5_000)
    # text-only: no knowledge graph structure at all (no graph encoder, no relation features in
    # the reranker); the codes' texts still come from the KG
    text_model = {**base_model, "gnn": None, "gnn_kwargs": {}, "rerank_relations": False}
    # no KG at all: text-only, and each code described by its own title alone (no inclusion terms,
    # synonyms or parents' titles in its text or in the dictionary), no hierarchy / Excludes
    # negatives, guidelines of the gold codes' titles only
    no_kg_model = {**text_model, "code_names": "title"}
    no_kg_train = {**base_train, "n_neighbours": 0}
    # the single-part ablations are compared with the full model before its reranker (its card
    # keeps those metrics: the ``no_reranker`` row), so they skip the cross-fitted reranker
    plain = {**base_train, "rerank_folds": 0}
    return {
        "full": {"model": base_model, "training": base_train},
        "text_only": {"model": text_model, "training": base_train},
        "no_contrastive": {"model": base_model, "training": {**plain, "pretrain_epochs": 0}},
        "no_lexicon": {"model": {**base_model, "lexicon": False}, "training": plain},
        "no_kg": {"model": no_kg_model, "training": no_kg_train},
        **{
            f"{name}_seed{seed}": {"model": model_, "training": {**train_, "seed": seed}}
            for seed in seeds
            for name, model_, train_ in (
                ("full", base_model, base_train),
                ("text_only", text_model, base_train),
                ("no_kg", no_kg_model, no_kg_train),
            )
        },
    }


def _seed_pairs(
    ablation: Any, base_seed: int, first: str = "full", second: str = "text_only"
) -> dict[int, tuple[str, str]]:
    """``{seed: (first variant, second variant)}`` of the seeds that have both (``ablation``: names)."""
    pairs = {base_seed: (first, second)}
    for name in ablation:
        if name.startswith(f"{first}_seed"):
            seed = int(name.removeprefix(f"{first}_seed"))
            pairs[seed] = (name, f"{second}_seed{seed}")
    return {s: p for s, p in sorted(pairs.items()) if all(n in ablation for n in p)}


def _margin_values(m: dict[str, Any]) -> dict[str, float]:
    """The metrics the KG margins compare."""
    b = m.get("buckets") or {}
    return {
        "map": m["map"],
        "micro_f1": m["micro_f1"],
        "unseen_f1": b["unseen"]["f1"],
        "unseen_r@10": b["unseen"]["r@10"],
        "1-5_f1": b["1-5"]["f1"],
        "1-5_r@10": b["1-5"]["r@10"],
    }


def _mean_std(per_seed: dict[Any, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    keys = next(iter(per_seed.values())).keys() if per_seed else []
    return {
        k: {
            "mean": round(statistics.mean(d[k] for d in per_seed.values()), 4),
            "std": round(statistics.stdev(d[k] for d in per_seed.values()), 4) if len(per_seed) > 1 else None,
        }
        for k in keys
    }


def kg_margin(
    ablation: dict[str, Any],
    base_seed: int,
    first: str = "full",
    second: str = "text_only",
    note: str = "full (graph encoder + relation features) - text_only (neither) on CodiEsp dev",
) -> dict[str, Any]:
    """``first`` minus ``second`` (by default what the KG's structure adds: full minus text-only),
    per seed, with mean and standard deviation."""
    per_seed = {}
    for seed, (a, b) in _seed_pairs(ablation, base_seed, first, second).items():
        f, t = _margin_values(ablation[a]["dev"]), _margin_values(ablation[b]["dev"])
        per_seed[seed] = {k: round(f[k] - t[k], 4) for k in f}
    return {"per_seed": per_seed, "mean_std": _mean_std(per_seed), "note": note}


def kg_attribution(ablation: dict[str, Any], base_seed: int) -> dict[str, Any]:
    """Which part of the KG margin the graph encoder and the reranker's relation features give.

    Each model's card holds the dev metrics of trees fitted with the other feature set on the same
    cross-fitted rows (``reranker.other_features``): the full model without relation features and
    the text-only model with them. Per seed and as mean and standard deviation:
    ``graph_encoder`` = full - text-only with relations; ``relations`` = full - full without them;
    and each of the two without the other.
    """
    parts: dict[str, dict[int, dict[str, float]]] = {
        "graph_encoder": {},
        "relations": {},
        "graph_encoder_without_relations": {},
        "relations_without_graph_encoder": {},
    }
    for seed, (full, text) in _seed_pairs(ablation, base_seed).items():
        other_f = (ablation[full].get("reranker") or {}).get("other_features")
        other_t = (ablation[text].get("reranker") or {}).get("other_features")
        if not other_f or not other_t:
            continue
        f, t = _margin_values(ablation[full]["dev"]), _margin_values(ablation[text]["dev"])
        f0, t1 = _margin_values(other_f["dev_metrics"]), _margin_values(other_t["dev_metrics"])
        for name, (a, b) in {
            "graph_encoder": (f, t1),
            "relations": (f, f0),
            "graph_encoder_without_relations": (f0, t),
            "relations_without_graph_encoder": (t1, t),
        }.items():
            parts[name][seed] = {k: round(a[k] - b[k], 4) for k in a}
    return {
        **{name: {"per_seed": p, "mean_std": _mean_std(p)} for name, p in parts.items()},
        "note": "differences on CodiEsp dev; the relation-feature rows come from the cards' other_features",
    }


_PER_NOTE: dict[Path, dict[str, Any]] = {}


def _per_note_counts(model: Path) -> dict[str, Any]:
    """Per dev note, the counts behind the rare-code metrics of one model (at its tuned threshold)."""
    if model not in _PER_NOTE:
        _PER_NOTE[model] = _count_per_note(model)
    return _PER_NOTE[model]


def _count_per_note(model: Path) -> dict[str, Any]:
    import numpy as np
    import torch

    from kgcode import paths
    from kgcode.coder import Coder
    from kgcode.datasets import read_dataset
    from kgcode.training import encode_notes, gold_matrix, prepare_notes, score_encoded

    coder = Coder.load(model)
    notes, _ = prepare_notes(read_dataset(DATA / "dev")[0], coder.label_row)
    encoded = encode_notes(coder, notes, cache_dir=paths.cache_dir() / "embeddings", show_progress_bar=False)
    gold = gold_matrix(encoded, len(coder.labels))
    with torch.no_grad():
        prob = torch.sigmoid(score_encoded(coder, encoded)).numpy()
    counts = np.asarray(coder.train_counts)
    pred = prob >= coder.threshold
    top = np.argpartition(-prob, 10, axis=1)[:, :10]
    hit = np.zeros_like(gold)
    np.put_along_axis(hit, top, True, axis=1)
    out: dict[str, Any] = {}
    for bucket, cols in (("1-5", (counts >= 1) & (counts <= 5)), ("unseen", counts == 0)):
        g, pr, h = gold[:, cols], pred[:, cols], hit[:, cols]
        out[bucket] = {
            "tp": (pr & g).sum(1),
            "fp": (pr & ~g).sum(1),
            "fn": (~pr & g).sum(1),
            "hits10": (h & g).sum(1),
            "gold": g.sum(1),
        }
    return out


def kg_margin_bootstrap(
    pairs: dict[int, tuple[str, str]],
    reps: int = 2000,
    seed: int = 0,
    what: str = "full - text_only",
) -> dict[str, Any]:
    """One model minus another (``pairs``: per seed; by default full minus text-only) on the rare
    buckets with paired bootstrap intervals over dev notes.

    Each resample draws the 250 dev notes with replacement and recomputes, for both models of every
    seed, F1 (at each model's own tuned threshold) and R@10 of the 1-5 and unseen buckets; the
    intervals are the 2.5 and 97.5 percentiles of the differences, per seed and averaged over seeds.
    """
    import numpy as np

    def metric(c: dict[str, Any], name: str, idx: Any) -> float:
        if name == "f1":
            tp, fp, fn = (int(c[k][idx].sum()) for k in ("tp", "fp", "fn"))
            return 2 * tp / max(1, 2 * tp + fp + fn)
        return float(c["hits10"][idx].sum()) / max(1, int(c["gold"][idx].sum()))

    stats = {s: (_per_note_counts(MODELS / f), _per_note_counts(MODELS / t)) for s, (f, t) in pairs.items()}
    keys = [(b, m) for b in ("1-5", "unseen") for m in ("f1", "r@10")]
    n = len(next(iter(stats.values()))[0]["1-5"]["tp"])

    def diffs(idx: Any) -> np.ndarray:
        return np.array(
            [[metric(f[b], m, idx) - metric(t[b], m, idx) for b, m in keys] for f, t in stats.values()]
        )

    point = diffs(np.arange(n))
    rng = np.random.default_rng(seed)
    boots = np.stack([diffs(rng.integers(0, n, n)) for _ in range(reps)])  # (reps, seeds, keys)
    out: dict[str, Any] = {"reps": reps, "notes": n, "seeds": sorted(stats), "metrics": {}}
    for j, (b, m) in enumerate(keys):
        mean = boots[:, :, j].mean(1)
        out["metrics"][f"{b}_{m}"] = {
            "per_seed": {
                str(s): [round(float(point[i, j]), 4)]
                + [round(float(np.percentile(boots[:, i, j], q)), 4) for q in (2.5, 97.5)]
                for i, s in enumerate(stats)
            },
            "mean": round(float(point[:, j].mean()), 4),
            "mean_ci95": [round(float(np.percentile(mean, q)), 4) for q in (2.5, 97.5)],
            "p_mean_below_0": round(float((mean < 0).mean()), 4),
        }
    out["note"] = f"{what}, paired bootstrap over CodiEsp dev notes: [point, 2.5 %, 97.5 %]"
    return out


_PREPARED: dict[str, Any] = {}


def _prepared(kg: Any, spec: dict[str, Any]) -> Any:
    """Notes and code texts encoded once (:func:`kgcode.training.prepare`), shared by every variant
    that describes codes the same way (``code_names``: the KG's names, or titles only)."""
    from kgcode.training import prepare

    key = spec["model"].get("code_names", "kg")
    if key not in _PREPARED:
        start = time.perf_counter()
        _PREPARED[key] = prepare(
            train_path=DATA / "train",
            dev_path=DATA / "dev",
            kg=kg,
            config=spec["model"],
            training=spec["training"],
            show_progress_bar=False,
        )
        _PREPARED[f"{key}_seconds"] = round(time.perf_counter() - start, 1)
    return _PREPARED[key]


def _lexicon_entry(card: dict[str, Any]) -> list[float] | None:
    """``[weight, prior]`` of the dictionary match tuned on dev (``None`` without a lexicon)."""
    lex = card.get("lexicon")
    return [lex["weight"], lex["prior"]] if lex else None


def _reranker_entry(card: dict[str, Any]) -> dict[str, Any] | None:
    """The reranker's facts from a model card, with the dev metrics of the model before it."""
    rr = card.get("reranker")
    if not rr:
        return None
    return {
        "dev_without_reranker": _slim(rr["dev_metrics_without_reranker"]),
        "folds": rr["folds"],
        "rows": rr["rows"],
        "positives": rr["positives"],
        "trees": rr["trees"],
        "seconds": rr["seconds"],
        "relation_features": rr.get("relation_features", False),
        "other_features": (
            {**rr["other_features"], "dev_metrics": _slim(rr["other_features"]["dev_metrics"])}
            if rr.get("other_features")
            else None
        ),
    }


def train_variant(
    name: str, spec: dict[str, Any], kg: Any, reuse: bool, prepare_spec: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train (or reuse) one variant; dev metrics of the model and of its zero-shot path.

    ``prepare_spec`` (the full model's) encodes the shared data: it has the graph inputs that
    graph variants need and that text-only variants ignore.
    """
    from kgcode.coder import Coder
    from kgcode.training import train

    folder = MODELS / name
    if reuse and (folder / "config.json").is_file():
        coder = Coder.load(folder)
        card = coder.card
        logger.info("%s: reusing %s", name, folder)
        return {
            "dev": card["dev_metrics"],
            "reranker": _reranker_entry(card),
            "zero_shot_part": card.get("dev_metrics_zero_shot_part"),
            "unseen_bias": card.get("unseen_bias"),
            "unseen_bias_sweep": card.get("unseen_bias_sweep"),
            "lexicon": _lexicon_entry(card),
            "training_seconds": card.get("training_seconds"),
            "model": str(folder),
            "reused": True,
        }
    names = spec["model"].get("code_names", "kg")
    same = prepare_spec is not None and prepare_spec["model"].get("code_names", "kg") == names
    prepared = _prepared(kg, prepare_spec if same else spec)
    result = train(
        config=spec["model"],
        training=spec["training"],
        metadata={"bench": name},
        checkpoint_dir=MODELS / f"{name}.ckpt",
        show_progress_bar=False,
        prepared=prepared,
    )
    result.save_to_directory(folder)
    card = result.coder.card
    return {
        "dev": _slim(result.metrics),
        "reranker": _reranker_entry(card),
        "zero_shot_part": _slim(card["dev_metrics_zero_shot_part"])
        if card["dev_metrics_zero_shot_part"]
        else None,
        "unseen_bias": card.get("unseen_bias"),
        "unseen_bias_sweep": card.get("unseen_bias_sweep"),
        "lexicon": _lexicon_entry(card),
        "training_seconds": round(result.seconds, 1),
        "prepare_seconds_shared": _PREPARED.get(f"{names}_seconds"),
        "history": card["history"],
        "model": str(folder),
    }


# --------------------------------------------------------------------------- performance (child process)


def _peak_rss_mb() -> float:
    """Peak RSS of this process in MB: ``VmHWM`` of ``/proc/self/status`` (Linux).

    ``ru_maxrss`` is not used: Linux carries the parent's peak over ``fork`` + ``exec``, so a child
    started by a benchmark that has trained models would report the parent's gigabytes.
    """
    import resource

    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)


def _setting(spec: str) -> tuple[str, str]:
    """``"int8"`` -> ``("int8", "torch")``; ``"onnx:int8"`` -> ``("int8", "onnx")``."""
    backend, _, dtype = spec.rpartition(":")
    return dtype, backend or "torch"


def _child_perf(model: str, n_notes: int, dtype: str, repeats: int = 3) -> dict[str, Any]:
    import torch

    from kgcode.coder import Coder, native_bf16
    from kgcode.datasets import read_dataset
    from kgcode.training import encode_notes, evaluate_coder, prepare_notes

    t0 = time.perf_counter()
    coder = Coder.load(model)
    if dtype != "auto":  # int8: builds the quantized copy; onnx: opens the exported session (load time)
        coder.set_inference(*_setting(dtype))
    coder.note_encoder.load()
    load_s = time.perf_counter() - t0
    notes, _ = read_dataset(DATA / "dev")
    notes, _ = prepare_notes(notes, coder.label_row)
    texts = [n.text for n in notes]
    sample = texts[:n_notes]
    words = sum(len(t.split()) for t in sample) / len(sample)
    long_notes = [t for t in texts if len(t.split()) >= 400]  # the "CodiEsp-length" is ~400 words
    coder.predict(sample[:4], threshold=0.0)  # warm-up
    predict_runs, encode_runs, long_runs, long_encode_runs = [], [], [], []
    for _ in range(max(1, repeats)):  # end to end and encoder alone, alternating, same process
        t = time.perf_counter()
        coder.predict(sample, threshold=0.0)
        predict_runs.append(time.perf_counter() - t)
        t = time.perf_counter()
        coder.encode_notes(sample)
        encode_runs.append(time.perf_counter() - t)
        t = time.perf_counter()
        coder.predict(long_notes, threshold=0.0)
        long_runs.append(time.perf_counter() - t)
        t = time.perf_counter()
        coder.encode_notes(long_notes)
        long_encode_runs.append(time.perf_counter() - t)
    predict_s, encode_s = statistics.median(predict_runs), statistics.median(encode_runs)
    long_s, long_encode_s = statistics.median(long_runs), statistics.median(long_encode_runs)
    predict_peak = _peak_rss_mb()  # before the evaluation below, which holds dev-wide score matrices
    encoded = encode_notes(coder, notes, inference=True)
    m = evaluate_coder(coder, encoded)
    return {
        "dtype": dtype,
        "runtime_dtype": coder.runtime_dtype,
        "runtime_backend": coder.runtime_backend,
        "native_bf16": native_bf16(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_s": round(load_s, 2),
        "notes": len(sample),
        "mean_words": round(words, 1),
        "predict_notes_per_s": round(len(sample) / predict_s, 2),
        "encoder_only_notes_per_s": round(len(sample) / encode_s, 2),
        "encoder_share_of_predict_time": round(encode_s / predict_s, 3),
        "long_notes": len(long_notes),
        "long_notes_mean_words": round(sum(len(t.split()) for t in long_notes) / max(1, len(long_notes)), 1),
        "long_notes_predict_notes_per_s": round(len(long_notes) / long_s, 2),
        # the ceiling of the end-to-end speed on them: the encoder alone
        "long_notes_encoder_only_notes_per_s": round(len(long_notes) / long_encode_s, 2),
        "repeats": len(predict_runs),
        "predict_seconds_runs": [round(x, 2) for x in predict_runs],
        "encoder_seconds_runs": [round(x, 2) for x in encode_runs],
        "threads": torch.get_num_threads(),
        "num_labels": len(coder.labels),
        "peak_rss_mb": _peak_rss_mb(),
        "peak_rss_mb_predict": predict_peak,
        "dev": _slim(m),
    }


def _child_compare(model: str, n_notes: int, dtypes: Sequence[str], repeats: int = 3) -> dict[str, Any]:
    """Inference precisions side by side in one process: timed runs alternate between them.

    The first precision is the base; for each other one: its predict and encoder speed-ups over the
    base (ratios of medians from interleaved runs, so machine noise hits both alike) and its CodiEsp
    dev metric changes.
    """
    from kgcode.coder import Coder
    from kgcode.datasets import read_dataset
    from kgcode.training import encode_notes, evaluate_coder, prepare_notes

    coder = Coder.load(model)
    notes, _ = read_dataset(DATA / "dev")
    notes, _ = prepare_notes(notes, coder.label_row)
    sample = [n.text for n in notes][:n_notes]
    runs: dict[str, dict[str, list[float]]] = {d: {"predict": [], "encode": []} for d in dtypes}
    for d in dtypes:  # warm-up (builds the int8 copy, opens the ONNX session)
        coder.set_inference(*_setting(d)).predict(sample[:4], threshold=0.0)
    for _ in range(max(1, repeats)):
        for d in dtypes:
            coder.set_inference(*_setting(d))
            t = time.perf_counter()
            coder.predict(sample, threshold=0.0)
            runs[d]["predict"].append(time.perf_counter() - t)
            t = time.perf_counter()
            coder.encode_notes(sample)
            runs[d]["encode"].append(time.perf_counter() - t)
    dev: dict[str, dict[str, float]] = {}
    for d in dtypes:
        coder.set_inference(*_setting(d))
        m = evaluate_coder(coder, encode_notes(coder, notes, inference=True))
        dev[d] = {
            "map": m["map"],
            "micro_f1": m["micro_f1"],
            "r@10": m["r@10"],
            "unseen_r@10": m["buckets"]["unseen"]["r@10"],
            "1-5_f1": m["buckets"]["1-5"]["f1"],
        }
    base = dtypes[0]
    med = {d: {k: statistics.median(v) for k, v in r.items()} for d, r in runs.items()}
    return {
        "base": base,
        "notes": len(sample),
        "repeats": max(1, repeats),
        "notes_per_s": {
            d: {
                "predict": round(len(sample) / m["predict"], 2),
                "encoder_only": round(len(sample) / m["encode"], 2),
            }
            for d, m in med.items()
        },
        "dev": {d: {k: round(v, 4) for k, v in m.items()} for d, m in dev.items()},
        "vs_base": {
            d: {
                "predict_speedup": round(med[base]["predict"] / med[d]["predict"], 3),
                "encoder_speedup": round(med[base]["encode"] / med[d]["encode"], 3),
                "dev_change": {k: round(dev[d][k] - dev[base][k], 4) for k in dev[base]},
            }
            for d in dtypes[1:]
        },
    }


def perf(model: Path, n_notes: int, dtype: str, repeats: int = 3) -> dict[str, Any]:
    """Run :func:`_child_perf` in a fresh process (its own peak RSS)."""
    cmd = [sys.executable, __file__, "--child-perf", str(model), "--n-notes", str(n_notes), "--dtype", dtype]
    out = subprocess.run(
        [*cmd, "--repeats", str(repeats)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise RuntimeError(f"perf child failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def zero_shot_row(model: Path) -> dict[str, Any]:
    """The full model's zero-shot path alone on dev (no training signal), threshold tuned on dev."""
    import torch

    from kgcode import paths
    from kgcode.coder import Coder
    from kgcode.datasets import read_dataset
    from kgcode.metrics import tune_threshold
    from kgcode.training import encode_notes, evaluate_coder, gold_matrix, prepare_notes, score_encoded

    coder = Coder.load(model)
    notes, _ = prepare_notes(read_dataset(DATA / "dev")[0], coder.label_row)
    encoded = encode_notes(coder, notes, cache_dir=paths.cache_dir() / "embeddings", show_progress_bar=False)
    logits = score_encoded(coder, encoded, part="zero_shot")
    thr, _ = tune_threshold(torch.sigmoid(logits).numpy(), gold_matrix(encoded, len(coder.labels)))
    m = evaluate_coder(coder, encoded, part="zero_shot", threshold=thr, logits=logits)
    return {
        "dev": _slim(m),
        "note": "the full model's zero-shot path alone (max cosine sentence / code text)",
    }


def _zero_shot_scores(coder: Any, encoded: Any) -> Any:
    """The coder's zero-shot maximum of every label for encoded notes, 16 notes a batch.

    Shapes:
        output: ``(len(encoded), num_labels)``.
    """
    import torch

    return torch.cat(
        [
            coder.zero_shot_max(*coder.pad_segments(encoded.segments[i : i + 16]))
            for i in range(0, len(encoded), 16)
        ]
    )


def zero_shot_names_row(model: Path) -> dict[str, Any] | None:
    """The zero-shot maximum alone on dev: every code ranked by its best cosine between a sentence
    and one of its names (``zero_shot_names``; no training signal at all), threshold tuned on dev.
    The issue's zero-shot reference (max sentence / title cosine) with every name of the KG."""
    import torch

    from kgcode import paths
    from kgcode.coder import Coder
    from kgcode.datasets import read_dataset
    from kgcode.metrics import tune_threshold
    from kgcode.training import encode_notes, evaluate_coder, gold_matrix, prepare_notes

    coder = Coder.load(model)
    if "names" not in coder.bank:
        return None
    notes, _ = prepare_notes(read_dataset(DATA / "dev")[0], coder.label_row)
    encoded = encode_notes(coder, notes, cache_dir=paths.cache_dir() / "embeddings", show_progress_bar=False)
    with torch.inference_mode():
        scores = _zero_shot_scores(coder, encoded)
    probs = scores.clamp(-1.0, 1.0).add(1.0).div(2.0)  # a cosine as a score in [0, 1]
    thr, _ = tune_threshold(probs.numpy(), gold_matrix(encoded, len(coder.labels)))
    logits = torch.logit(probs.clamp(1e-6, 1 - 1e-6))
    m = evaluate_coder(coder, encoded, threshold=thr, logits=logits)
    return {
        "dev": _slim(m),
        "note": "the zero-shot maximum alone: best cosine between a sentence and one of a code's names",
    }


FRONTIER_OFFSETS = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)


def operating_points(probs: Any, gold: Any, coder: Any, *, low: int, high: int) -> dict[str, Any]:
    """One training-frequency bucket's F1 at the coder's threshold, its best F1 over thresholds, and
    the precision of its N most probable (note, code) pairs pooled over the notes.

    The bucket F1 at the global threshold mixes two things: how well the bucket's codes are ranked
    and where the threshold (tuned for micro-F1 over all codes) happens to fall for them. The best
    F1 over thresholds and the pooled precision at equal numbers of predictions measure the first
    alone, so two models can be compared at the same operating point.
    """
    import numpy as np

    counts = np.asarray(coder.train_counts)
    cols = (counts >= low) & (counts <= high)
    p, g = probs[:, cols], gold[:, cols]

    def f1(thr: float) -> float:
        pred = p >= thr
        tp = int((pred & g).sum())
        return 2 * tp / max(1, int(pred.sum()) + int(g.sum()))

    grid = [round(t, 2) for t in np.arange(0.05, 0.951, 0.01)]
    best = max(grid, key=f1)
    order = np.argsort(-p, axis=None)
    hits = g.ravel()[order]
    return {
        "mentions": int(g.sum()),
        "f1_at_threshold": round(f1(float(coder.threshold)), 4),
        "threshold": round(float(coder.threshold), 3),
        "best_f1": round(f1(best), 4),
        "best_threshold": best,
        "pooled_precision_at": {str(n): round(float(hits[:n].mean()), 4) for n in (300, 450, 600, 800)},
    }


def unseen_frontier(model: Path, offsets: Sequence[float] = FRONTIER_OFFSETS) -> dict[str, Any]:
    """What recall of unseen codes costs: dev MAP, micro-F1 and unseen R@10 as the last offset of
    the codes without training notes grows (the trade-off that training tunes with its tolerances).

    The coder's own last offset (``reranked_unseen_bias``, or ``unseen_bias`` without a reranker) is
    set to 0 and the grid is added to the dev logits (:func:`kgcode.training.tradeoff_metrics`:
    exact MAP and unseen R@10; micro-F1 at its best threshold for each offset, so slightly
    optimistic).
    """
    import torch

    from kgcode import paths
    from kgcode.coder import Coder
    from kgcode.datasets import read_dataset
    from kgcode.training import encode_notes, gold_matrix, prepare_notes, score_encoded, tradeoff_metrics

    coder = Coder.load(model)
    key = "reranked_unseen_bias" if coder.reranker is not None else "unseen_bias"  # the JSON's label
    chosen = coder.unseen_offset
    coder.set_unseen_offset(0.0)
    notes, _ = prepare_notes(read_dataset(DATA / "dev")[0], coder.label_row)
    encoded = encode_notes(coder, notes, cache_dir=paths.cache_dir() / "embeddings", show_progress_bar=False)
    logits = score_encoded(coder, encoded)
    rows = tradeoff_metrics(logits, encoded.gold, coder.unseen_mask, offsets)
    final = torch.sigmoid(logits + chosen * coder.unseen_mask.float()).numpy()
    return {
        "offset": key,
        "chosen": chosen,
        "rare_1_5": operating_points(final, gold_matrix(encoded, len(coder.labels)), coder, low=1, high=5),
        "points": [
            {"offset": o, **{k: round(v, 4) for k, v in m.items()}}
            for o, m in zip(offsets, rows, strict=True)
        ],
    }


def dictionary_rows(model: Path, seed: int = 13) -> dict[str, Any]:
    """The dictionary match alone, and an honest estimate of its dev-tuned weight and prior.

    * ``lexicon_only``: codes ranked by their dictionary coverage alone (the zero-shot cosine breaks
      ties), threshold tuned on dev: what the name look-up finds with no training note at all.
    * ``crossfit``: the weight and prior are tuned on dev like the threshold; to see how much that
      flatters the dev MAP, dev is split in two halves 5 times (seeded), the grid is tuned on one
      half and scored on the other, and the held-out MAP is compared with the MAP tuned on all of dev.
    """
    import random

    import torch

    from kgcode import paths
    from kgcode.coder import Coder
    from kgcode.datasets import read_dataset
    from kgcode.metrics import tune_threshold
    from kgcode.training import (
        TrainConfig,
        encode_notes,
        evaluate_coder,
        gold_matrix,
        lexicon_sweep,
        mean_ap,
        prepare_notes,
        tune_lexicon,
    )

    coder = Coder.load(model)
    if coder.lexicon is None:
        return {}
    coder.reranker = None  # training tuned the dictionary before it fitted the reranker: the same here
    notes, _ = prepare_notes(read_dataset(DATA / "dev")[0], coder.label_row)
    encoded = encode_notes(coder, notes, cache_dir=paths.cache_dir() / "embeddings", show_progress_bar=False)
    coverage, _ = coder.lexical_match(encoded.segments)
    zs = _zero_shot_scores(coder, encoded)
    logits = 20.0 * coverage + zs - 10.0
    thr, _ = tune_threshold(torch.sigmoid(logits).numpy(), gold_matrix(encoded, len(coder.labels)))
    lexicon_only = _slim(evaluate_coder(coder, encoded, threshold=thr, logits=logits))
    weight, prior = coder.config.lexical_weight, coder.config.lexical_prior
    sweep = lexicon_sweep(coder, encoded, TrainConfig())
    at = {(e["weight"], e["prior"]): e["ap"] for e in sweep}
    rng = random.Random(seed)
    held_out, tuned_all, chosen = [], [], []
    for _ in range(5):
        order = list(range(len(encoded)))
        rng.shuffle(order)
        halves = [order[: len(order) // 2], order[len(order) // 2 :]]
        for a, b in (halves, halves[::-1]):
            w, p, _ = tune_lexicon(sweep, a)
            held_out.append(mean_ap(at[(w, p)], b))
            tuned_all.append(mean_ap(at.get((weight, prior), at[(w, p)]), b))
            chosen.append([w, p])
    return {
        "lexicon_only": {
            "dev": lexicon_only,
            "note": "ranked by dictionary coverage alone (zero-shot cosine breaks ties); no training note",
        },
        "crossfit": {
            "weight_prior_tuned_on_all_dev": [weight, prior],
            "map_without_dictionary": round(mean_ap(at[(0.0, sweep[0]["prior"])], range(len(encoded))), 4),
            "held_out_half_map_mean": round(sum(held_out) / len(held_out), 4),
            "same_halves_with_all_dev_tuning": round(sum(tuned_all) / len(tuned_all), 4),
            "chosen_per_half": chosen,
            "note": "5 seeded 50/50 splits of dev, both directions; MAP cut at 1000; grid scored end to end",
        },
    }


def summary_table(ablation: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per variant: MAP, micro-F1, R@10, unseen R@10 and the 1-5 bucket's F1 / R@10."""
    rows = []
    for name, entry in ablation.items():
        m = entry.get("dev") or {}
        b = m.get("buckets") or {}
        rows.append(
            {
                "variant": name,
                "map": m.get("map"),
                "micro_f1": m.get("micro_f1"),
                "r@10": m.get("r@10"),
                "unseen_r@10": (b.get("unseen") or {}).get("r@10"),
                "1-5_f1": (b.get("1-5") or {}).get("f1"),
                "1-5_r@10": (b.get("1-5") or {}).get("r@10"),
                "unseen_bias": entry.get("unseen_bias"),
                "lexical_weight_prior": entry.get("lexicon"),
            }
        )
    return rows


# --------------------------------------------------------------------------- main


def main() -> None:
    """Train the variants, run the baseline and the performance children, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "coder.yaml")
    parser.add_argument(
        "--kg", default=None, help="KG folder (default: build one under .cache/bench-models)."
    )
    parser.add_argument(
        "--only",
        default="full,text_only,no_contrastive,no_lexicon,no_kg,seeds,zero_shot,frontier,margin_ci,tfidf,perf",
    )
    parser.add_argument("--quick", action="store_true", help="One epoch per variant (a smoke run).")
    parser.add_argument(
        "--seeds",
        default="14,15",
        help="More training seeds of full and text-only, for the graph encoder's margin (comma list).",
    )
    parser.add_argument("--reuse", action="store_true", help="Reuse models trained by an earlier run.")
    parser.add_argument("--n-notes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3, help="Timed predict runs (the median is kept).")
    parser.add_argument("--child-perf", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="bf16", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_perf:
        logging.basicConfig(level=logging.WARNING)
        if "," in args.dtype:
            out = _child_compare(args.child_perf, args.n_notes, args.dtype.split(","), args.repeats)
        else:
            out = _child_perf(args.child_perf, args.n_notes, args.dtype, args.repeats)
        print(json.dumps(out))  # noqa: T201
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    only = set(args.only.split(","))
    out_file = RESULTS / "coder.json"
    results: dict[str, Any] = json.loads(out_file.read_text()) if out_file.is_file() else {}
    import torch

    from kgcode.coder import native_bf16

    results["machine"] = {
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": native_bf16(),
    }
    results["config"] = (
        str(args.config.relative_to(ROOT)) if args.config.is_relative_to(ROOT) else str(args.config)
    )
    results["quick"] = args.quick
    kg = _kg(args.kg)
    ablation = results.setdefault("ablation", {})
    seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
    specs = variants(args.config, args.quick, seeds)
    for name, spec in specs.items():
        if name in only or ("seeds" in only and "_seed" in name):
            logger.info("==> training %s", name)
            ablation[name] = train_variant(name, spec, kg, args.reuse, specs["full"])
            if name == "full" and ablation[name].get("reranker"):
                ablation["no_reranker"] = {
                    "dev": ablation[name]["reranker"]["dev_without_reranker"],
                    "note": "the full model before its candidate reranker (threshold tuned on dev)",
                }
            RESULTS.mkdir(parents=True, exist_ok=True)
            out_file.write_text(json.dumps(results, indent=1) + "\n")
    if "zero_shot" in only and (MODELS / "full" / "config.json").is_file():
        logger.info("==> the zero-shot path alone")
        ablation["zero_shot_only"] = zero_shot_row(MODELS / "full")
        names_row = zero_shot_names_row(MODELS / "full")
        if names_row is not None:
            ablation["zero_shot_names_only"] = names_row
        logger.info("==> the dictionary match alone, and its dev tuning cross-fitted")
        rows = dictionary_rows(MODELS / "full")
        if rows:
            ablation["lexicon_only"] = rows["lexicon_only"]
            results["lexicon_crossfit"] = rows["crossfit"]
    if "frontier" in only:
        logger.info("==> the unseen-code trade-off of full and text-only (dev)")
        names = [n for n in ablation if n.startswith(("full", "text_only"))] or ["full", "text_only"]
        # models not on this machine keep their entries from an earlier run
        results.setdefault("unseen_frontier", {}).update(
            {
                name: unseen_frontier(MODELS / name)
                for name in names
                if (MODELS / name / "config.json").is_file()
            }
        )
    if "margin_ci" in only:
        base_seed = int(specs["full"]["training"]["seed"])
        on_disk = [n for n in specs if (MODELS / n / "config.json").is_file()]
        for key, first, second in (
            ("kg_margin_bootstrap", "full", "text_only"),
            ("kg_total_margin_bootstrap", "full", "no_kg"),
            ("kg_names_margin_bootstrap", "text_only", "no_kg"),
        ):
            pairs = _seed_pairs(on_disk, base_seed, first, second)
            if pairs:
                logger.info("==> %s - %s on rare codes, paired bootstrap over dev notes", first, second)
                results[key] = kg_margin_bootstrap(pairs, what=f"{first} - {second}")
    if "tfidf" in only:
        logger.info("==> TF-IDF + one-vs-rest logistic regression")
        ablation["tfidf_lr"] = {"dev": tfidf_baseline(kg)}
    if "perf" in only and (MODELS / "full" / "config.json").is_file():
        from kgcode.coder import resolve_inference_dtype
        from text_encoder.onnx_backend import onnx_available

        # "auto" is what users get; fp32 beside it where auto resolves to bf16 on this CPU; int8
        # (opt-in) on torch and on ONNX Runtime with their dev quality change against auto, from
        # the same bench run
        dtypes = ["auto"] + (["fp32"] if resolve_inference_dtype("auto") != "fp32" else []) + ["int8"]
        dtypes += ["onnx:int8"] if onnx_available() else []
        # side by side first: it also writes the ONNX export once, which the fresh processes only open
        logger.info("==> the precisions side by side in one process (interleaved runs)")
        results.pop("int8_vs_auto", None)
        side = ["auto", *dtypes] + (["onnx:fp32"] if onnx_available() else [])
        results["precision_side_by_side"] = perf(
            MODELS / "full", args.n_notes, ",".join(dict.fromkeys(side)), args.repeats
        )
        logger.info("==> performance (%s, fresh processes)", ", ".join(dtypes))
        results["performance"] = {d: perf(MODELS / "full", args.n_notes, d, args.repeats) for d in dtypes}
    results["training_seconds_full"] = (ablation.get("full") or {}).get("training_seconds")
    results["table"] = summary_table(ablation)
    results["kg_margin"] = kg_margin(ablation, int(specs["full"]["training"]["seed"]))
    notes = {
        "kg_total_margin": "full - no_kg (text-only with titles only: no KG names, structure or relations)",
        "kg_names_margin": "text_only - no_kg (what the KG's names and hierarchy text add alone)",
    }
    for key, first in (("kg_total_margin", "full"), ("kg_names_margin", "text_only")):
        if "no_kg" in ablation:
            seed = int(specs["full"]["training"]["seed"])
            results[key] = kg_margin(ablation, seed, first, "no_kg", notes[key] + " on CodiEsp dev")
    results["kg_attribution"] = kg_attribution(ablation, int(specs["full"]["training"]["seed"]))
    if "full" in ablation:
        results["buckets_full"] = ablation["full"]["dev"].get("buckets")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out_file.write_text(json.dumps(results, indent=1) + "\n")
    logger.info("wrote %s", out_file)


if __name__ == "__main__":
    main()
