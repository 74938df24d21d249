"""Benchmark: the benchmarked coder on the NCBI disease silver set -> ``bench/results/ncbi.json``.

The NCBI disease corpus (PubMed abstracts, English) codes disease mentions with MeSH / OMIM ids;
:func:`kgcode.datasets.silver_icd10cm` maps them to ICD-10-CM through the KG's Disease Ontology and
Mondo cross-references (exact and dbxref matches), which gives a *silver* English check of the
coder trained on CodiEsp (``bench/bench_coder.py``'s ``full`` model; run that first). Abstracts are
not clinical notes and the silver codes are often category-level, so these numbers are reported
separately and never used to choose anything. Only the train and develop splits are here; the
test split is withheld.

Run: ``.venv/bin/python bench/bench_ncbi.py [--model DIR] [--kg DIR]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("bench.ncbi")
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
MODELS = ROOT / ".cache" / "bench-models"
DATA = Path(os.environ.get("KGCODE_DATA_DIR", ROOT.parent / "shared" / "data")) / "ncbi_disease"


def _eval(model: Path, data: Path, kg: Path, part: str) -> dict:
    cmd = [sys.executable, "-m", "kgcode.cli", "-q", "eval", "--model", str(model), "--data", str(data),
           "--kg", str(kg), "--part", part, "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout)


def main() -> int:
    """Evaluate the full coder (and its zero-shot path) on NCBI develop; write the JSON."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=MODELS / "full")
    ap.add_argument("--kg", type=Path, default=MODELS / "kg")
    ap.add_argument("--out", type=Path, default=RESULTS / "ncbi.json")
    args = ap.parse_args()
    if not (args.model / "config.json").is_file():
        logger.warning("no coder at %s: run bench/bench_coder.py first; skipping", args.model)
        return 0
    if not DATA.is_dir() or not (args.kg / "manifest.json").is_file():
        logger.warning("no NCBI disease data in %s or no KG at %s; skipping", DATA, args.kg)
        return 0
    result: dict = {"benchmark": "ncbi_disease_silver", "model": str(args.model), "splits": {}}
    keys = ("map", "micro_precision", "micro_recall", "micro_f1", "p@5", "r@10", "r@50", "threshold")
    for split, name in (("train", "NCBItrainset_corpus.txt"), ("develop", "NCBIdevelopset_corpus.txt")):
        rows = {}
        for part in ("all", "zero_shot"):
            start = time.perf_counter()
            m = _eval(args.model, DATA / name, args.kg, part)
            rows[part] = {**{k: round(float(m[k]), 4) for k in keys}, "buckets": m["buckets"],
                          "data": m["data"], "seconds": round(time.perf_counter() - start, 1)}
            logger.info("%s %s: MAP %.4f R@10 %.4f micro-F1 %.4f (%d abstracts)", split, part, m["map"],
                        m["r@10"], m["micro_f1"], m["data"]["notes"])
        result["splits"][split] = rows
    result["time"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ncbi.", suffix=".json", dir=args.out.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(result, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, args.out)
    logger.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
