"""DistributedDataParallel: two CPU processes (gloo) train the tiny coder and end with identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_two_gloo_processes_train_and_agree(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "OMP_NUM_THREADS": "1",
        "KGCODE_HOME": str(tmp_path / "home"),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(REPO / "tests" / "fixtures" / "coder" / "ddp_train.py"),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    assert r0["world_size"] == r1["world_size"] == 2
    assert [h["stage"] for h in r0["history"]] == ["align", "notes", "notes"]
    assert r0["state"].keys() == r1["state"].keys()
    for key, value in r0["state"].items():
        assert torch.equal(value, r1["state"][key]), key
    assert "reranker.value" in r0["state"]  # the cross-fitted reranker, identical on both ranks
    # training moved the weights (the graph encoder's neighbour weights start at zero)
    assert any(v.abs().sum() > 0 for k, v in r0["state"].items() if k.startswith("graph.hops"))
