"""The TextEncoder contract: a generic fake encoder must satisfy it; Segments checks itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch

from text_encoder.base import Segments, TextEncoder


class FakeEncoder(TextEncoder):
    """Deterministic vectors from character counts; not registered (tests only)."""

    name = "fake-test"
    dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, show_progress_bar: bool | None = None
    ) -> torch.Tensor:
        self.calls += 1
        rows = [[len(t), t.count("a"), t.count("e"), 1.0] for t in texts]
        out = torch.tensor(rows, dtype=torch.float32).reshape(len(texts), self.dim)
        return torch.nn.functional.normalize(out, dim=-1)

    def encode_segments(self, text: str) -> Segments:
        parts = [p for p in text.split(".") if p.strip()]
        spans = []
        pos = 0
        for p in parts:
            start = text.index(p, pos)
            spans.append((start, start + len(p)))
            pos = start + len(p)
        return Segments(texts=parts, spans=spans, vectors=self.encode(parts))

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "kwargs": {}}


def test_abstract_contract_cannot_be_instantiated() -> None:
    with pytest.raises(TypeError):
        TextEncoder()  # type: ignore[abstract]


def test_fake_encoder_follows_the_contract() -> None:
    enc = FakeEncoder()
    vecs = enc.encode(["abc", "eee", ""])
    assert vecs.shape == (3, enc.dim)
    assert torch.allclose(vecs.norm(dim=1), torch.ones(3))
    segs = enc.encode_segments("one. two")
    assert [("one. two")[a:b] for a, b in segs.spans] == segs.texts
    many = enc.encode_segments_many(["a.b", "c"])
    assert [len(s) for s in many] == [2, 1]
    assert enc.fingerprint() == enc.get_config() == {"name": "fake-test", "kwargs": {}}
    assert "fake-test" in repr(enc)


def test_segments_checks_lengths() -> None:
    Segments(texts=["a"], spans=[(0, 1)], vectors=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="same number"):
        Segments(texts=["a", "b"], spans=[(0, 1)], vectors=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="same number"):
        Segments(texts=["a"], spans=[(0, 1)], vectors=torch.zeros(2, 3))
    assert len(Segments(texts=[], spans=[], vectors=torch.zeros(0, 3))) == 0
