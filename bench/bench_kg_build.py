"""Benchmark: build the full KG and load it back (``bench/results/kg_build.json``).

Each build and each load runs in a fresh process so that peak RSS is that of the job alone.
Targets (2-core machine): full build < 15 s and < 1 GB peak RSS; load < 3 s.
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
import tempfile
import time
from pathlib import Path

logger = logging.getLogger("bench.kg_build")
RESULTS = Path(__file__).resolve().parent / "results"


def _child_build(out: str, data_dir: str | None) -> dict:
    from kg import save_kg
    from kgcode.pipeline import build_default_kg

    start = time.perf_counter()
    result = build_default_kg(data_dir, progress=False)
    built = time.perf_counter() - start
    save_kg(result.kg, out)
    total = time.perf_counter() - start
    return {"build_s": built, "build_and_save_s": total, "stats": result.kg.stats(),
            "left_out": result.left_out}


def _child_load(path: str) -> dict:
    start = time.perf_counter()
    from kg import load_kg

    kg = load_kg(path)
    seconds = time.perf_counter() - start
    return {"load_s": seconds, "nodes": len(kg)}


def _run_child(args: list[str]) -> tuple[dict, float]:
    """Run one child; return its JSON payload and its own peak RSS in MB (from wait4)."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"benchmark child {args} failed with status {status}")
    return json.loads(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024.0


def main() -> None:
    """Parent: N builds and N loads in fresh processes; medians to JSON."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--child", choices=["build", "load"], default=None)
    parser.add_argument("--path", default=None)
    args = parser.parse_args()
    if args.child == "build":
        print(json.dumps(_child_build(args.path, args.data_dir)))  # noqa: T201 - child protocol
        return
    if args.child == "load":
        print(json.dumps(_child_load(args.path)))  # noqa: T201 - child protocol
        return

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from kgcode.paths import default_data_dir

    data_dir = args.data_dir or (str(default_data_dir()) if default_data_dir() else None)
    builds, loads, build_rss, load_rss = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "kg")
        extra = ["--data-dir", data_dir] if data_dir else []
        stats = None
        for i in range(args.runs):
            run = ["--child", "build", "--path", path, *extra]
            payload, rss = _run_child(run)
            build_rss.append(rss)
            builds.append(payload["build_s"])
            stats = payload["stats"]
            logger.info("build %d: %.2f s (build+save %.2f s), peak RSS %.0f MB", i + 1,
                        payload["build_s"], payload["build_and_save_s"], build_rss[-1])
        for i in range(args.runs):
            run = ["--child", "load", "--path", path]
            payload, rss = _run_child(run)
            load_rss.append(rss)
            loads.append(payload["load_s"])
            logger.info("load %d: %.2f s, peak RSS %.0f MB", i + 1, payload["load_s"], load_rss[-1])
        kg_size = sum(f.stat().st_size for f in Path(path).iterdir())
    result = {
        "benchmark": "kg_build",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "data_dir": data_dir,
        "runs": args.runs,
        "build_s_median": round(statistics.median(builds), 3),
        "build_s_all": [round(x, 3) for x in builds],
        "build_peak_rss_mb_median": round(statistics.median(build_rss), 1),
        "load_s_median": round(statistics.median(loads), 3),
        "load_s_all": [round(x, 3) for x in loads],
        "load_peak_rss_mb_median": round(statistics.median(load_rss), 1),
        "kg_folder_mb": round(kg_size / 1e6, 1),
        "targets": {"build_s": 15, "build_peak_rss_mb": 1024, "load_s": 3},
        "counts": stats,
    }
    result["meets_targets"] = (result["build_s_median"] < 15
                               and result["build_peak_rss_mb_median"] < 1024
                               and result["load_s_median"] < 3)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "kg_build.json"
    tmp_out = out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_out, out)
    logger.info("wrote %s: build %.2f s, %.0f MB; load %.2f s", out, result["build_s_median"],
                result["build_peak_rss_mb_median"], result["load_s_median"])


if __name__ == "__main__":
    main()
