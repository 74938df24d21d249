"""Relation-aware SIGN (registry name ``"rsign"``)."""

from __future__ import annotations

import torch

from gnn import gnn_registry
from gnn.rsign import RelationalSIGN


def test_rsign_starts_as_identity_and_propagates_typed_neighbours() -> None:
    names = ["is_a", "excludes1", "rev_is_a", "rev_excludes1"]
    enc = RelationalSIGN(
        4, names, operators=[[["rev_is_a"]], [["is_a"]], [["is_a"], ["rev_is_a"]]], dropout=0.0
    )
    x = torch.eye(4)
    x[3] = 0  # a node without features (a SNOMED CT id): never averaged in
    # 1 -is_a-> 0, 2 -is_a-> 0, 3 -is_a-> 0 (and reverses)
    ei = torch.tensor([[1, 2, 3, 0, 0, 0], [0, 0, 0, 1, 2, 3]])
    et = torch.tensor([0, 0, 0, 2, 2, 2])
    prop = enc.propagate(x, ei, et)
    assert prop.shape == (3, 4, 4)
    assert torch.allclose(prop[0, 1], x[0])  # parents of 1
    assert torch.allclose(prop[1, 0], (x[1] + x[2]) / 2)  # children of 0 that have features
    assert torch.allclose(prop[2, 1], (x[1] + x[2]) / 2)  # siblings (incl. itself) of 1
    assert torch.allclose(enc(x, ei, et), x)  # identity before training
    config = enc.get_config()
    assert config["name"] == "rsign" and RelationalSIGN(**config["kwargs"]).num_operators == 3


def test_rsign_is_registered() -> None:
    assert gnn_registry.get("rsign") is RelationalSIGN
