"""Benchmark: predicting ICD-10-CM -> SNOMED CT links (``bench/results/map.json``).

The known links (ICD-10-CM code -> SNOMED CT id through one DO/Mondo concept with ``exact`` or
``dbxref`` cross-references to both; chapters and blocks left out) are split **by ICD code**,
80/20, with a recorded seed, for each of 3 seeds. For each split the held-out codes' own
cross-reference edges are removed from every graph and feature the methods see (the predictor
builds its own stripped copy: :class:`kgcode.snomed_predictor.LinkGraph`), and every method
ranks **all** SNOMED CT ids that DO/Mondo carry for each held-out code (an id scores as its best
carrier). Side by side, in one run:

* ``a_inheritance``: the SNOMED CT ids of the nearest ICD-10-CM ancestor / descendant with a
  link, ranked by hop distance (ancestors first at equal distance);
* ``b_text_labels``: MiniLM cosine of the ICD-10-CM title with DO/Mondo concept labels (the
  issue's reference: Hits@1 0.69, Hits@10 0.87, MRR 0.76);
* ``b_text_names``: the same against every name of a concept (label and synonyms): the stronger
  text baseline;
* ``c_graph_model``: the trained predictor (R-GCN link prediction + path features + reranker,
  calibrated);
* ablations: ``c_gnn_only`` (the R-GCN's DistMult score alone) and ``c_no_gnn`` (the reranker
  without the graph-encoder features).

Metrics: Hits@1/5/10 (a hit when any true id is at rank <= k) and MRR (of the best-ranked true
id); ties are broken by one fixed random order of the ids. Also, for the predictor: the
calibrated threshold (chosen on the training codes' out-of-fold scores for precision >= 0.9),
precision and recall of held-out (code, id) pairs at that threshold, and coverage: how many
billable ICD-10-CM codes get at least one SNOMED CT id above it.

Run: ``.venv/bin/python bench/bench_map.py`` (``--kg PATH`` for a built KG; default: the last
one built, else a fresh build from ``../shared/data``). The first run embeds ~150,000 node texts
with MiniLM into the embedding cache (10-60 minutes on 2 shared cores); later runs read them.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger("bench.map")
RESULTS = Path(__file__).resolve().parent / "results"
KS = (1, 5, 10)


def _split(codes: list[str], seed: int, test_fraction: float = 0.2) -> tuple[list[str], list[str]]:
    perm = np.random.default_rng(seed).permutation(len(codes))
    n_test = int(round(test_fraction * len(codes)))
    test = sorted(codes[i] for i in perm[:n_test])
    train = sorted(codes[i] for i in perm[n_test:])
    return train, test


def _metrics(
    scored: list[dict[str, float]], truth: list[set[str]], all_ids: list[str], tie_order: dict[str, int]
) -> dict[str, float]:
    """Hits@k and MRR; an id absent from a code's dict scores -inf."""
    hits = {k: 0 for k in KS}
    rr = 0.0
    n_ids = len(all_ids)
    for scores, true in zip(scored, truth, strict=True):
        best_rank = n_ids
        for t in true:
            s = scores.get(t, float("-inf"))
            if s == float("-inf"):
                # below every scored id; among the unscored ones by the tie order
                unscored_before = sum(
                    1 for other in all_ids if other not in scores and tie_order[other] < tie_order[t]
                )
                rank = len(scores) + unscored_before + 1
            else:
                greater = sum(1 for v in scores.values() if v > s)
                ties = sum(1 for o, v in scores.items() if v == s and tie_order[o] < tie_order[t])
                rank = greater + ties + 1
            best_rank = min(best_rank, rank)
        for k in KS:
            hits[k] += best_rank <= k
        rr += 1.0 / best_rank
    n = max(1, len(scored))
    out = {f"hits@{k}": hits[k] / n for k in KS}
    out["mrr"] = rr / n
    out["n"] = len(scored)
    return out


def _inheritance(lg: Any, code: str, max_up: int = 6, max_down: int = 3) -> dict[str, float]:
    """SNOMED CT ids of the nearest linked ancestors / descendants: score = -distance."""
    scores: dict[str, float] = {}

    def offer(node: str, score: float) -> None:
        for concept in lg.code_links.get(node, ()):
            for sct in lg.concept_scts.get(concept, ()):
                scores[sct] = max(scores.get(sct, float("-inf")), score)

    frontier, seen = [code], {code}
    for d in range(1, max_up + 1):
        frontier = [p for f in frontier for p in lg.parents.get(f, ()) if p not in seen]
        seen.update(frontier)
        for a in frontier:
            if lg.kinds.get(a) != "chapter":
                offer(a, -float(d))
    frontier, seen = [code], {code}
    for d in range(1, max_down + 1):
        frontier = [k for f in frontier for k in lg.children.get(f, ()) if k not in seen]
        seen.update(frontier)
        for k in frontier:
            offer(k, -float(d) - 0.5)  # a descendant ranks after an ancestor at the same distance
    return scores


def _text_scores(
    code_vecs: torch.Tensor, name_owner: torch.Tensor, name_vecs: torch.Tensor, concepts: list[str], lg: Any
) -> list[dict[str, float]]:
    """SNOMED CT id -> best cosine over its carriers' names, per code."""
    out: list[dict[str, float]] = []
    for start in range(0, code_vecs.size(0), 256):
        q = code_vecs[start : start + 256]
        sims = q @ name_vecs.T
        per_concept = torch.full((q.size(0), len(concepts)), -2.0)
        per_concept.scatter_reduce_(1, name_owner.expand(q.size(0), -1), sims, "amax")
        pc = per_concept.numpy()
        for row in pc:
            scores: dict[str, float] = {}
            for j, concept in enumerate(concepts):
                s = float(row[j])
                for sct in lg.concept_scts[concept]:
                    if s > scores.get(sct, -3.0):
                        scores[sct] = s
            out.append(scores)
    return out


def _summary(per_seed: list[dict[str, float]]) -> dict[str, Any]:
    keys = [k for k in per_seed[0] if k != "n"]
    out: dict[str, Any] = {}
    for k in keys:
        vals = [r[k] for r in per_seed]
        out[k] = {
            "mean": round(statistics.mean(vals), 4),
            "std": round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0,
            "min": round(min(vals), 4),
            "max": round(max(vals), 4),
        }
    return out


def _margins(per_seed: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Per metric: graph model minus the best baseline of the same seed (mean, std over seeds)."""
    baselines = ("a_inheritance", "b_text_labels", "b_text_names")
    out: dict[str, Any] = {}
    for k in (*(f"hits@{k}" for k in KS), "mrr"):
        diffs = [
            run[k] - max(per_seed[b][i][k] for b in baselines)
            for i, run in enumerate(per_seed["c_graph_model"])
        ]
        out[k] = {
            "mean": round(statistics.mean(diffs), 4),
            "std": round(statistics.stdev(diffs), 4) if len(diffs) > 1 else 0.0,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kg", type=Path, default=None, help="a built KG folder (default: the last built)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS / "map.json")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on 2 shared cores, one thread was up to 50x faster than two)",
    )
    parser.add_argument("--no-ablations", action="store_true", help="skip c_no_gnn")
    parser.add_argument(
        "--no-coverage", action="store_true", help="skip the coverage pass over billable codes"
    )
    parser.add_argument("--gnn", default="rgcn", help="graph encoder registry name (rgcn, rsage)")
    parser.add_argument("--gnn-epochs", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)

    from kg import load_kg
    from kgcode.paths import default_data_dir, last_kg_dir
    from kgcode.snomed_predictor import (
        LinkGraph,
        PredictorConfig,
        compute_text_vectors,
        default_embedding_dir,
        default_text_encoder,
        embed_names,
        linked_codes,
        train_predictor,
    )

    t_start = time.perf_counter()
    kg_dir = args.kg or last_kg_dir()
    if kg_dir is not None:
        kg = load_kg(kg_dir)
    else:
        from kgcode.pipeline import build_default_kg

        kg = build_default_kg(default_data_dir()).kg
    links = linked_codes(kg, "ICD10CM")
    codes = sorted(links)
    logger.info("%d ICD-10-CM codes with a SNOMED CT link", len(codes))

    # Text vectors do not depend on links (kg.texts reads titles, synonyms, notes, is_a only),
    # so they are computed once from the full graph and shared by every split.
    t0 = time.perf_counter()
    lg_full = LinkGraph.from_kg(kg)
    text_vectors = compute_text_vectors(kg, lg_full)
    encoder = default_text_encoder()
    cache = default_embedding_dir()
    concepts = lg_full.candidates
    label_owner, label_vecs = embed_names(kg, concepts, encoder, cache, titles_only=True)
    name_owner, name_vecs = text_vectors[1], text_vectors[2]
    _, title_vecs = embed_names(kg, codes, encoder, cache, titles_only=True)
    title_row = {c: i for i, c in enumerate(codes)}
    t_text = time.perf_counter() - t0
    if args.threads:  # loading MiniLM sets torch's threads to the machine's CPUs
        torch.set_num_threads(args.threads)
    logger.info("text vectors ready in %.1f s", t_text)

    all_ids = sorted({s for c in concepts for s in lg_full.concept_scts[c]})
    order = np.random.default_rng(12345).permutation(len(all_ids))
    tie_order = {s: int(order[i]) for i, s in enumerate(all_ids)}

    config = PredictorConfig(gnn=args.gnn)
    if args.gnn_epochs:
        config.gnn_epochs = args.gnn_epochs
    methods = ["a_inheritance", "b_text_labels", "b_text_names", "c_gnn_only", "c_graph_model"]
    if not args.no_ablations:
        methods += ["c_no_gnn", "c_with_degree"]
    per_seed: dict[str, list[dict[str, float]]] = {m: [] for m in methods}
    seeds_out: list[dict[str, Any]] = []
    coverage: dict[str, Any] | None = None
    for seed in args.seeds:
        train, test = _split(codes, seed)
        truth = [set(links[c]) for c in test]
        t_seed = time.perf_counter()
        lg = LinkGraph.from_kg(kg, exclude=test)
        assert not any(lg.code_links.get(c) for c in test), "held-out links leaked into the link graph"
        res: dict[str, dict[str, float]] = {}
        res["a_inheritance"] = _metrics([_inheritance(lg, c) for c in test], truth, all_ids, tie_order)
        rows = torch.tensor([title_row[c] for c in test])
        res["b_text_labels"] = _metrics(
            _text_scores(title_vecs[rows], label_owner, label_vecs, concepts, lg), truth, all_ids, tie_order
        )
        res["b_text_names"] = _metrics(
            _text_scores(title_vecs[rows], name_owner, name_vecs, concepts, lg), truth, all_ids, tie_order
        )
        t0 = time.perf_counter()
        predictor = train_predictor(kg, holdout=test, seed=seed, config=config, text_vectors=text_vectors)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        scored = predictor.sct_scores(test)
        t_pred = time.perf_counter() - t0
        res["c_graph_model"] = _metrics(scored, truth, all_ids, tie_order)
        res["c_gnn_only"] = _metrics(predictor.gnn_sct_scores(test), truth, all_ids, tie_order)
        thr = predictor.threshold
        pairs = [
            (s >= thr, sct in true) for sc, true in zip(scored, truth, strict=True) for sct, s in sc.items()
        ]
        n_above = sum(1 for a, _ in pairs if a)
        tp = sum(1 for a, t in pairs if a and t)
        n_true = sum(len(t) for t in truth)
        at_threshold = {
            "threshold": round(thr, 4),
            "pairs_above": n_above,
            "precision": round(tp / n_above, 4) if n_above else None,
            "recall": round(tp / n_true, 4),
            "codes_with_a_link_above": sum(1 for sc in scored if any(v >= thr for v in sc.values())),
            "oof_precision": predictor.card.get("oof_precision_at_threshold"),
        }
        for m in methods:
            if m in res:
                per_seed[m].append(res[m])
        seeds_out.append(
            {
                "seed": seed,
                "n_train_codes": len(train),
                "n_test_codes": len(test),
                "metrics": {m: {k: round(v, 4) for k, v in res[m].items()} for m in methods if m in res},
                "at_threshold": at_threshold,
                "train_seconds": round(t_train, 1),
                "train_breakdown_seconds": predictor.card.get("seconds"),
                "predict_seconds": round(t_pred, 2),
                "seed_seconds": round(time.perf_counter() - t_seed, 1),
            }
        )
        logger.info("seed %d: %s", seed, json.dumps(seeds_out[-1], indent=None))
        if coverage is None and not args.no_coverage:
            t0 = time.perf_counter()
            billable = sorted(c for c in lg.billable if c.startswith("ICD10CM:"))
            ranked = predictor.predict_many(billable, top_k=1)
            covered = [c for c in billable if ranked.get(c) and ranked[c][0]["score"] >= thr]
            exact = {c for c in billable if links.get(c)}
            coverage = {
                "seed": seed,
                "threshold": round(thr, 4),
                "billable_codes": len(billable),
                "covered": len(covered),
                "covered_fraction": round(len(covered) / max(1, len(billable)), 4),
                "covered_without_exact_link": sum(1 for c in covered if c not in exact),
                "billable_with_exact_link": len(exact),
                "seconds": round(time.perf_counter() - t0, 1),
                "codes_per_second": round(len(billable) / max(1e-9, time.perf_counter() - t0), 1),
            }
            logger.info("coverage: %s", coverage)
        if not args.no_ablations:
            # the same graph encoders and out-of-fold features, reranker refitted with the
            # concept-degree feature (dropped by default: see PredictorConfig.drop_features)
            predictor.refit_reranker(drop_features=())
            res["c_with_degree"] = _metrics(predictor.sct_scores(test), truth, all_ids, tie_order)
            cfg2 = PredictorConfig(**{**config.to_dict(), "use_gnn": False})
            p2 = train_predictor(kg, holdout=test, seed=seed, config=cfg2, text_vectors=text_vectors)
            res["c_no_gnn"] = _metrics(p2.sct_scores(test), truth, all_ids, tie_order)
            for m in ("c_with_degree", "c_no_gnn"):
                per_seed[m].append(res[m])
                seeds_out[-1]["metrics"][m] = {k: round(v, 4) for k, v in res[m].items()}

    result = {
        "benchmark": "map",
        "description": "ICD-10-CM -> SNOMED CT link prediction on held-out ICD codes (split by code, 80/20)",
        "kg": str(kg_dir) if kg_dir else "built in process",
        "linked_codes": len(codes),
        "candidate_snomed_ids": len(all_ids),
        "candidate_concepts": len(concepts),
        "seeds": args.seeds,
        "methods": methods,
        "summary": {m: _summary(per_seed[m]) for m in methods},
        "margin_over_best_baseline": _margins(per_seed),
        "per_seed": seeds_out,
        "coverage": coverage,
        "predictor_config": config.to_dict(),
        "text_vectors_seconds": round(t_text, 1),
        "total_seconds": round(time.perf_counter() - t_start, 1),
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu": platform.processor() or platform.machine(),
        },
        "reference_text_baseline_from_issue": {"hits@1": 0.69, "hits@10": 0.87, "mrr": 0.76},
        "targets_graph_model": {"hits@1": 0.80, "hits@10": 0.95, "mrr": 0.85},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    logger.info("wrote %s", args.out)
    for m in methods:
        s = result["summary"][m]
        logger.info(
            "%-15s Hits@1 %.3f±%.3f  Hits@5 %.3f  Hits@10 %.3f±%.3f  MRR %.3f±%.3f",
            m, s["hits@1"]["mean"], s["hits@1"]["std"], s["hits@5"]["mean"], s["hits@10"]["mean"],
            s["hits@10"]["std"], s["mrr"]["mean"], s["mrr"]["std"],
        )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
