"""The R-GCN graph encoder (registered as ``rgcn``) and its sparse R-GCN layer."""

from __future__ import annotations

import json

import pytest
import torch
from torch_geometric.nn import RGCNConv

from gnn.base import GraphEncoder
from gnn.registry import gnn_registry
from gnn.rgcn import RGCNEncoder, SparseRGCNConv

N_NODES, N_REL, IN_DIM = 30, 4, 12


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _graph(seed: int = 0, n_edges: int = 120) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(N_NODES, IN_DIM, generator=gen)
    edge_index = torch.randint(0, N_NODES, (2, n_edges), generator=gen)
    edge_type = torch.randint(0, N_REL - 1, (n_edges,), generator=gen)  # relation N_REL-1 has no edge
    return x, edge_index, edge_type


def test_registered() -> None:
    assert gnn_registry["rgcn"] is RGCNEncoder
    enc = gnn_registry.resolve("rgcn", in_dim=IN_DIM, num_relations=N_REL, hidden_dim=8)
    assert isinstance(enc, GraphEncoder) and isinstance(enc, RGCNEncoder)


@pytest.mark.parametrize("conv", ["sparse", "rgcn", "fast"])
def test_forward_shapes(conv: str) -> None:
    x, ei, et = _graph()
    enc = RGCNEncoder(IN_DIM, N_REL, hidden_dim=8, out_dim=5, num_layers=2, num_bases=2, conv=conv)
    out = enc(x, ei, et)
    assert out.shape == (N_NODES, 5)
    assert torch.isfinite(out).all()
    assert RGCNEncoder(IN_DIM, N_REL, hidden_dim=8, num_layers=0)(x, ei, et).shape == (N_NODES, 8)


@pytest.mark.parametrize("aggr", ["mean", "sum"])
@pytest.mark.parametrize("num_bases", [None, 2])
def test_sparse_layer_equals_pyg_rgcnconv(aggr: str, num_bases: int | None) -> None:
    x, ei, et = _graph(1)
    ours = SparseRGCNConv(IN_DIM, 6, N_REL, num_bases=num_bases, aggr=aggr)
    pyg = RGCNConv(IN_DIM, 6, N_REL, num_bases=num_bases, aggr="add" if aggr == "sum" else aggr)
    pyg.load_state_dict(ours.state_dict())  # same parameter names and shapes
    torch.testing.assert_close(ours(x, ei, et), pyg(x, ei, et), atol=1e-5, rtol=1e-5)


def test_sparse_layer_caches_the_adjacency_per_graph() -> None:
    x, ei, et = _graph(2)
    conv = SparseRGCNConv(IN_DIM, 4, N_REL, num_bases=2)
    conv(x, ei, et)
    cached = conv._cache
    conv(x, ei, et)
    assert conv._cache is cached
    x2, ei2, et2 = _graph(3)
    expected = RGCNConv(IN_DIM, 4, N_REL, num_bases=2)
    expected.load_state_dict(conv.state_dict())
    torch.testing.assert_close(conv(x2, ei2, et2), expected(x2, ei2, et2), atol=1e-5, rtol=1e-5)
    assert conv._cache is not cached
    with pytest.raises(ValueError, match="aggr"):
        SparseRGCNConv(IN_DIM, 4, N_REL, aggr="max")


def test_reset_parameters_changes_weights() -> None:
    torch.manual_seed(0)
    enc = RGCNEncoder(IN_DIM, N_REL, hidden_dim=8, num_bases=2)
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    enc.reset_parameters()
    changed = [k for k, v in enc.state_dict().items() if not torch.equal(v, before[k])]
    assert any("convs.0" in k for k in changed) and any("input" in k for k in changed)


def test_get_config_round_trip() -> None:
    enc = RGCNEncoder(IN_DIM, N_REL, hidden_dim=8, out_dim=3, num_layers=3, num_bases=2, dropout=0.2)
    cfg = json.loads(json.dumps(enc.get_config()))
    assert cfg["name"] == "rgcn"
    again = RGCNEncoder.from_config(cfg)
    assert again.get_config() == enc.get_config()
    again.load_state_dict(enc.state_dict())
    enc.eval()
    again.eval()
    x, ei, et = _graph()
    torch.testing.assert_close(enc(x, ei, et), again(x, ei, et))
    with pytest.raises(ValueError):
        RGCNEncoder(IN_DIM, N_REL, conv="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="edge_type"):
        enc(x, ei, None)


def test_gradient_reaches_every_parameter() -> None:
    x, ei, et = _graph()
    enc = RGCNEncoder(IN_DIM, N_REL - 1, hidden_dim=8, num_layers=2, num_bases=2, dropout=0.1)
    x.requires_grad_(True)
    enc(x, ei, et).pow(2).sum().backward()
    missing = [n for n, p in enc.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, missing
    assert x.grad is not None and torch.any(x.grad != 0)
    assert enc.num_parameters() > 0
