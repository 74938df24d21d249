"""Load test of ``kgcode serve`` on loopback (``bench/results/serve.json``).

Starts ``kgcode serve`` in a subprocess with the real KG (and ``--model DIR`` when a model folder
is given), then, for a fixed time per endpoint, N client threads send requests over keep-alive
``http.client`` connections:

* ``GET /codes/{code}`` over random real ICD-10-CM codes (read from the KG's ``graph.sqlite``),
  ``--clients`` clients (target p95 <= 20 ms);
* with a model, ``POST /predict`` with one note, 4 clients (target p95 <= 500 ms).

Reports requests/s, p50/p95/p99/max latency and errors (any non-200 or socket error; must be
0) per endpoint, and the server's resident memory sampled from ``/proc/<pid>/status`` (VmRSS)
every 0.2 s: at the start, the end and the peak (steady RSS means no growth over the run).

Run: ``.venv/bin/python bench/bench_serve.py [--kg DIR] [--model DIR] [--duration 15]``. Clients
and server share the machine's cores, so the numbers include the clients' own CPU use.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import platform
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

logger = logging.getLogger("bench.serve")
RESULTS = Path(__file__).resolve().parent / "results"
BENCH_MODEL = Path(__file__).resolve().parents[1] / ".cache" / "bench-models" / "full"
NOTE = ("72 year old man seen in clinic for follow-up of type 2 diabetes mellitus without complications, "
        "on metformin. Blood pressure 150/95: essential hypertension, poorly controlled. Chronic kidney "
        "disease stage 3 noted on labs. No chest pain. Plan: continue metformin, start lisinopril, recheck "
        "renal function in three months.")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class RssSampler(threading.Thread):
    """Samples a process's VmRSS every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            kb = _rss_kb(self.pid)
            if kb is not None:
                self.samples.append(kb)
            self.stop.wait(self.interval)


def _client(port: int, make: Any, until: float, lat: list[float], errors: list[str]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while time.perf_counter() < until:
        method, path, body = make()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        t0 = time.perf_counter()
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            dt = time.perf_counter() - t0
            if resp.status != 200:
                errors.append(f"{resp.status} {path}")
            else:
                lat.append(dt)
        except (OSError, http.client.HTTPException) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.close()


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def run_endpoint(name: str, port: int, make: Any, clients: int, duration: float) -> dict[str, Any]:
    """N client threads for ``duration`` seconds; latency percentiles in milliseconds."""
    # warm-up: a few requests not counted
    warm: list[float] = []
    _client(port, make, time.perf_counter() + min(2.0, duration / 5), warm, [])
    lats: list[list[float]] = [[] for _ in range(clients)]
    errs: list[list[str]] = [[] for _ in range(clients)]
    until = time.perf_counter() + duration
    t0 = time.perf_counter()
    threads = [threading.Thread(target=_client, args=(port, make, until, lats[i], errs[i]))
               for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = [x for xs in lats for x in xs]
    errors = [e for es in errs for e in es]
    out = {
        "endpoint": name, "clients": clients, "duration_s": round(wall, 2), "requests": len(lat),
        "requests_per_s": round(len(lat) / wall, 1),
        "latency_ms": {k: round(1000 * v, 2) for k, v in (
            ("p50", _pct(lat, 50)), ("p95", _pct(lat, 95)), ("p99", _pct(lat, 99)),
            ("max", max(lat) if lat else float("nan")),
            ("mean", statistics.fmean(lat) if lat else float("nan")))},
        "errors": len(errors), "error_examples": errors[:5],
    }
    logger.info("%s: %d clients, %.1f req/s, p50 %.1f ms, p95 %.1f ms, p99 %.1f ms, %d errors", name, clients,
                out["requests_per_s"], out["latency_ms"]["p50"], out["latency_ms"]["p95"],
                out["latency_ms"]["p99"], len(errors))
    return out


def _kg_dir(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    from kgcode import paths

    found = paths.last_kg_dir()
    if found is None:
        raise SystemExit("no KG built yet: run `kgcode kg build` or pass --kg DIR")
    return found


def _with_rss(sampler: RssSampler, run: Any, *args: Any) -> dict[str, Any]:
    """Run one endpoint's load and add the server's RSS over it: growth = max of the second half
    minus max of the first half (steady memory: close to 0)."""
    i0 = len(sampler.samples)
    result = run(*args)
    seg = sampler.samples[i0:]
    if len(seg) >= 4:
        half = len(seg) // 2
        first, second = max(seg[:half]) / 1024, max(seg[half:]) / 1024
        result["server_rss_mb"] = {"start": round(seg[0] / 1024, 1), "end": round(seg[-1] / 1024, 1),
                                   "max_first_half": round(first, 1), "max_second_half": round(second, 1),
                                   "growth_second_half_mb": round(second - first, 1)}
    return result


def main() -> int:
    """Run the load test and write ``bench/results/serve.json``."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=None, help="a coder folder (optional)")
    ap.add_argument("--model", dest="model_opt", default=None,
                    help="a coder folder (default: .cache/bench-models/full when bench_coder.py trained it)")
    ap.add_argument("--kg", default=None, help="KG folder (default: the last one built)")
    ap.add_argument("--duration", type=float, default=15.0, help="seconds per endpoint")
    ap.add_argument("--clients", type=int, default=4, help="concurrent clients for /codes/{code}")
    ap.add_argument("--dtype", default=None, choices=["auto", "fp32", "bf16", "int8"],
                    help="the model's inference precision (kgcode serve --dtype; default: the model's)")
    ap.add_argument("--backend", default=None, choices=["torch", "onnx"],
                    help="where the note encoder runs (kgcode serve --backend; default: the model's)")
    ap.add_argument("--out", default=str(RESULTS / "serve.json"))
    args = ap.parse_args()
    model = args.model_opt or args.model
    if model is None and (BENCH_MODEL / "config.json").is_file():
        model = str(BENCH_MODEL)  # the coder bench/bench_coder.py trained (make bench runs it first)
    kg_dir = _kg_dir(args.kg)
    with sqlite3.connect(f"file:{kg_dir / 'graph.sqlite'}?mode=ro", uri=True) as db:
        codes = [r[0] for r in db.execute("SELECT id FROM nodes WHERE system = 'ICD10CM'")]
    rng = random.Random(0)

    port = _free_port()
    # the `serve` command itself (the same code `kgcode serve` runs), whether or not cli.py wires it yet
    cmd = [sys.executable, "-c", "from kgcode.cli_serve import serve_command; serve_command()",
           "--kg", str(kg_dir), "--port", str(port)]
    if model:
        cmd += ["--model", str(model)]
        if args.dtype:
            cmd += ["--dtype", args.dtype]
        if args.backend:
            cmd += ["--backend", args.backend]
    logger.info("starting: %s", " ".join(cmd))
    t_start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        health = None
        while health is None:
            if proc.poll() is not None:
                raise SystemExit(f"kgcode serve exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/health")
                health = json.loads(conn.getresponse().read())
                conn.close()
            except OSError:
                time.sleep(0.2)
        startup_s = time.perf_counter() - t_start
        logger.info("service up in %.1f s (model loaded: %s)", startup_s, health["model"]["loaded"])
        sampler = RssSampler(proc.pid)
        sampler.start()
        endpoints = [_with_rss(sampler, run_endpoint, "GET /codes/{code}", port,
                               lambda: ("GET", "/codes/" + rng.choice(codes), None),
                               args.clients, args.duration)]
        if model and health["model"]["loaded"]:
            body = json.dumps({"text": NOTE})
            endpoints.append(_with_rss(sampler, run_endpoint, "POST /predict", port,
                                       lambda: ("POST", "/predict", body), 4, args.duration))
        elif model:
            logger.warning("the model did not load: %s", health["model"].get("error"))
        sampler.stop.set()
        sampler.join()
        if model and health["model"]["loaded"]:  # the page, as a user sees it after pasting a note
            from kg.viz import screenshot

            url = f"http://127.0.0.1:{port}/?hops=1&note={urllib.parse.quote(NOTE)}"
            page_png = Path(args.out).parent / "serve_page_model.png"
            if screenshot(url, page_png, window_size=(1400, 1000), wait_ms=15_000):
                logger.info("screenshot of the page with a prediction: %s", page_png)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
    rss = sampler.samples
    targets = {"GET /codes/{code}": 20.0, "POST /predict": 500.0}
    result = {
        "benchmark": "serve",
        "dtype": args.dtype or "the model's",
        "backend": args.backend or "the model's",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "kg": str(kg_dir), "model": model, "model_loaded": bool(health["model"]["loaded"]),
        "startup_s": round(startup_s, 2),
        "endpoints": endpoints,
        "targets_p95_ms": targets,
        "targets_met": {e["endpoint"]: e["latency_ms"]["p95"] <= targets[e["endpoint"]] and e["errors"] == 0
                        for e in endpoints},
        "server_rss_mb": {"start": round(rss[0] / 1024, 1), "end": round(rss[-1] / 1024, 1),
                          "max": round(max(rss) / 1024, 1), "samples": len(rss)} if rss else None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".serve.", suffix=".json", dir=out.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(result, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, out)
    logger.info("RSS MB: %s", result["server_rss_mb"])
    logger.info("wrote %s", out)
    return 0 if all(e["errors"] == 0 for e in endpoints) else 1


if __name__ == "__main__":
    sys.exit(main())
