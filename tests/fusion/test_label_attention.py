"""The label-attention fusion heads: the Fusion contract, banks, and one test per registered head."""

from __future__ import annotations

import inspect

import pytest
import torch

import fusion.label_attention as la
from fusion.registry import fusion_registry

TEXT, CODE, SEGS, CODES = 8, 12, 5, 7
HEADS = sorted(n for n in fusion_registry.names() if fusion_registry.get(n).__module__ == la.__name__)


def make(name: str) -> la.Fusion:
    cls = fusion_registry.get(name)
    params = inspect.signature(cls.__init__).parameters
    dims = {"text_dim": TEXT, "code_dim": CODE, "seg_dim": TEXT, "dim": TEXT, "attn_dim": 6}
    torch.manual_seed(0)
    return cls(**{k: v for k, v in dims.items() if k in params})


def code_dim(head: la.Fusion) -> int:
    return int(getattr(head, "code_dim", getattr(head, "dim", TEXT)))


def batch(head: la.Fusion) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    seg = torch.randn(3, SEGS, TEXT, generator=g)
    mask = torch.ones(3, SEGS, dtype=torch.bool)
    mask[1, 3:] = False  # padding
    mask[2] = False  # a note without segments
    return seg, mask, torch.randn(CODES, code_dim(head), generator=g)


def test_every_head_of_this_module_is_tested() -> None:
    assert set(HEADS) == {"zero_shot", "label_attention", "hybrid_label_attention"}


@pytest.mark.parametrize("name", HEADS)
def test_contract_shapes_and_attention(name: str) -> None:
    head = make(name).eval()
    seg, mask, codes = batch(head)
    logits, attention = head(seg, mask, codes)
    assert logits.shape == (3, CODES)
    assert attention.shape == (3, CODES, SEGS)
    assert torch.isfinite(logits).all()
    # weights sum to one over real segments, zero on padding and on an empty note
    assert torch.allclose(attention[0].sum(-1), torch.ones(CODES), atol=1e-5)
    assert torch.allclose(attention[1].sum(-1), torch.ones(CODES), atol=1e-5)
    assert attention[1, :, 3:].abs().max() == 0
    assert attention[2].abs().max() == 0


@pytest.mark.parametrize("name", HEADS)
def test_padding_does_not_change_scores(name: str) -> None:
    head = make(name).eval()
    seg, mask, codes = batch(head)
    noisy = seg.clone()
    noisy[1, 3:] = 100.0
    assert torch.allclose(head(seg, mask, codes)[0][1], head(noisy, mask, codes)[0][1], atol=1e-5)


@pytest.mark.parametrize("name", HEADS)
def test_bank_scores_match_forward(name: str) -> None:
    head = make(name).eval()
    seg, mask, codes = batch(head)
    logits, attention = head(seg, mask, codes)
    bank = head.code_bank(codes)
    assert all(v.shape[0] == CODES for v in bank.values())
    b_logits, b_att = head.score_bank(seg, mask, bank, attention=True)
    assert torch.allclose(logits, b_logits, atol=1e-4)
    assert torch.allclose(attention, b_att, atol=1e-5)
    assert head.score_bank(seg, mask, bank)[1] is None
    sub = {k: v[[2, 4]] for k, v in bank.items()}  # a slice of the bank scores those codes
    assert torch.allclose(head.score_bank(seg, mask, sub)[0], logits[:, [2, 4]], atol=1e-4)


@pytest.mark.parametrize("name", HEADS)
def test_config_rebuilds_the_same_head(name: str) -> None:
    head = make(name).eval()
    config = head.get_config()
    assert config["name"] == name
    again = fusion_registry.resolve(config["name"], **config["kwargs"])
    again.load_state_dict(head.state_dict())
    again.eval()
    seg, mask, codes = batch(head)
    assert torch.allclose(head(seg, mask, codes)[0], again(seg, mask, codes)[0])


@pytest.mark.parametrize("name", HEADS)
def test_bad_shapes_are_refused(name: str) -> None:
    head = make(name)
    seg, mask, codes = batch(head)
    with pytest.raises(ValueError, match="codes must be"):
        head(seg, mask, codes[:, :-1])
    with pytest.raises(ValueError, match="segment_mask"):
        head(seg, mask[:, :-1], codes)


def test_zero_shot_is_max_cosine_and_parameter_free_in_ranking() -> None:
    head = la.ZeroShotFusion(TEXT, temperature=1e-3).eval()
    seg = torch.nn.functional.normalize(torch.randn(1, 4, TEXT), dim=-1)
    codes = torch.nn.functional.normalize(torch.randn(6, TEXT), dim=-1)
    logits, attention = head(seg, torch.ones(1, 4, dtype=torch.bool), codes)
    best = (codes @ seg[0].T).max(dim=1).values
    assert torch.allclose((logits[0] - head.bias) / head.log_scale.exp(), best, atol=1e-4)
    assert torch.equal(attention[0].argmax(-1), (codes @ seg[0].T).argmax(-1))


def test_hybrid_starts_from_zero_shot_and_exposes_both_paths() -> None:
    head = make("hybrid_label_attention").eval()
    seg, mask, codes = batch(head)
    zs, sup, zs_att, sup_att = head.parts(seg, mask, codes)
    logits, _ = head(seg, mask, codes)
    assert torch.allclose(logits, head.combine(zs, sup))
    w = head.weights.detach()
    assert float(w[0]) == 1.0 and float(w[1]) < 0.5
    zero_only = head.zero_shot.score_bank(seg, mask, head.code_bank(codes))[0]
    assert torch.allclose(zero_only, zs, atol=1e-5)


def test_supervised_code_side_has_no_per_code_parameter() -> None:
    """Any number of codes can be scored: nothing in the head is sized by the label set."""
    head = make("hybrid_label_attention")
    seg, mask, _ = batch(head)
    for n in (1, 50):
        logits, _ = head(seg, mask, torch.randn(n, CODE))
        assert logits.shape == (3, n)
    assert all(CODES not in p.shape for p in head.parameters())


def test_gradients_reach_both_paths_weights_and_projections() -> None:
    head = make("hybrid_label_attention").train()
    seg, mask, codes = batch(head)
    codes.requires_grad_(True)
    logits, _ = head(seg, mask, codes)
    logits[:2].sum().backward()
    assert head.weights.grad is not None and head.weights.grad.abs().sum() > 0
    assert head.supervised.query.weight.grad is not None
    assert codes.grad is not None and torch.isfinite(codes.grad).all()


def test_hybrid_refuses_codes_narrower_than_text() -> None:
    with pytest.raises(ValueError, match="code_dim"):
        la.HybridLabelAttention(text_dim=8, code_dim=4)
