"""The graph-encoder registry: every registered encoder has its test module."""

from __future__ import annotations

from pathlib import Path

from gnn import gnn_registry

#: Every built-in graph encoder and the test module that covers it.
TESTED = {"rsign": "tests/gnn/test_rsign.py", "rgcn": "tests/gnn/test_rgcn.py"}
ROOT = Path(__file__).resolve().parents[2]


def test_every_registered_graph_encoder_has_a_test() -> None:
    untested = sorted(set(gnn_registry.names()) - set(TESTED))
    assert not untested, f"registered graph encoders without a test: {untested}"
    for module in TESTED.values():
        assert (ROOT / module).is_file(), module
