"""int8 dynamic quantization helpers (no model download: small random layers)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from text_encoder import quantize
from text_encoder.quantize import int8_available, int8_linear, quantize_linears


def _quantized_linears(module: nn.Module) -> int:
    return sum(".quantized." in type(m).__module__ and type(m).__name__ == "Linear" for m in module.modules())


def test_int8_linear_is_close_to_the_float_product() -> None:
    gen = torch.Generator().manual_seed(0)
    weight = nn.functional.normalize(torch.randn(500, 32, generator=gen), dim=-1)
    x = nn.functional.normalize(torch.randn(7, 32, generator=gen), dim=-1)
    product = int8_linear(weight)
    out = product(x)
    assert out.dtype == torch.float32 and out.shape == (7, 500)
    exact = x @ weight.T
    assert (out - exact).abs().max() < 0.03 and not torch.equal(out, exact)
    assert (out.argmax(1) == exact.argmax(1)).float().mean() >= 6 / 7  # the best code rarely changes


def test_quantize_linears_replaces_every_linear_in_place() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    x = torch.randn(3, 8)
    before = model(x)
    assert quantize_linears(model) is model
    assert _quantized_linears(model) == 2
    assert torch.allclose(model(x), before, atol=0.1)


def test_without_a_quantized_engine_the_error_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert int8_available()  # the CPU build of torch has one
    monkeypatch.setattr(quantize, "int8_available", lambda: False)
    with pytest.raises(ValueError, match="no quantized engine"):
        quantize_linears(nn.Sequential(nn.Linear(2, 2)))
