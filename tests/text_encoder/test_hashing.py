"""The weightless hashing encoder (registry name ``"hashing"``)."""

from __future__ import annotations

import pytest
import torch

from text_encoder import text_encoder_registry
from text_encoder.hashing import HashingTextEncoder

NOTE = "Type 2 diabetes mellitus with hyperglycemia.\nHe has used insulin for years."


def test_hashing_encoder_is_deterministic_and_lexical() -> None:
    enc = HashingTextEncoder(dim=32)
    a, b, c = enc.encode(["type 2 diabetes", "Type 2 diabetic", "fracture of femur"])
    assert torch.allclose(enc.encode(["type 2 diabetes"])[0], a)
    assert float(a @ b) > float(a @ c)
    seg = enc.encode_segments(NOTE)
    assert [NOTE[s:e] for s, e in seg.spans] == seg.texts and seg.vectors.shape == (2, 32)
    with pytest.raises(TypeError):
        enc.encode("a string")


def test_hashing_encoder_is_registered_and_round_trips_its_config() -> None:
    enc = HashingTextEncoder(dim=16, seed=3)
    config = enc.get_config()
    assert text_encoder_registry.get("hashing") is HashingTextEncoder
    again = HashingTextEncoder(**config["kwargs"])
    assert torch.equal(again.encode(["fever"]), enc.encode(["fever"]))
    with pytest.raises(ValueError, match="dim"):
        HashingTextEncoder(dim=1)
