"""The on-disk embedding cache: hits, misses, invalidation, atomic files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.text_encoder.test_base import FakeEncoder
from text_encoder.cache import FORMAT_VERSION, EmbeddingCache

IDS = ["ICD10CM:E11.9", "ICD10CM:I10", "ICD10CM:R52"]
TEXTS = [
    "Type 2 diabetes mellitus without complications",
    "Essential (primary) hypertension",
    "Pain, unspecified",
]
PARTS = {"ontology": "ICD10CM", "version": "2026"}


def test_miss_then_hit(tmp_path: Path) -> None:
    cache, enc = EmbeddingCache(tmp_path / "emb"), FakeEncoder()
    first = cache.get_or_compute(PARTS, IDS, TEXTS, enc)
    assert enc.calls == 1
    assert first.shape == (3, enc.dim) and first.dtype == torch.float32
    again = cache.get_or_compute(PARTS, IDS, TEXTS, enc)
    assert enc.calls == 1  # read back, not recomputed
    assert torch.equal(first, again)
    files = sorted(p.name for p in (tmp_path / "emb").iterdir())
    assert len(files) == 2 and files[0].endswith(".json") and files[1].endswith(".safetensors")
    assert not any(name.endswith(".tmp") for name in files)


def test_sidecar_records_ids_and_key_parts(tmp_path: Path) -> None:
    cache, enc = EmbeddingCache(tmp_path), FakeEncoder()
    cache.get_or_compute(PARTS, IDS, TEXTS, enc)
    key = cache.key(PARTS, TEXTS, enc)
    tensor_path, sidecar_path = cache.paths(key)
    meta = json.loads(sidecar_path.read_text())
    assert meta["format"] == FORMAT_VERSION
    assert meta["ids"] == IDS
    assert meta["key_parts"] == PARTS
    assert meta["encoder"] == enc.fingerprint()
    assert (meta["n"], meta["dim"]) == (3, enc.dim)
    assert meta["created"].endswith("+00:00")
    assert tensor_path.is_file()


@pytest.mark.parametrize(
    "change",
    ["version", "texts", "ids"],
)
def test_changes_recompute(tmp_path: Path, change: str) -> None:
    cache, enc = EmbeddingCache(tmp_path), FakeEncoder()
    cache.get_or_compute(PARTS, IDS, TEXTS, enc)
    parts, ids, texts = dict(PARTS), list(IDS), list(TEXTS)
    if change == "version":
        parts["version"] = "2027"
    elif change == "texts":
        texts[0] = "Type 2 diabetes mellitus"
    else:
        ids = ["ICD10CM:E11.9", "ICD10CM:I10", "ICD10CM:R52.0"]
    out = cache.get_or_compute(parts, ids, texts, enc)
    assert enc.calls == 2
    assert out.shape == (3, enc.dim)
    # and the new entry is a hit afterwards
    cache.get_or_compute(parts, ids, texts, enc)
    assert enc.calls == 2


def test_text_boundaries_are_part_of_the_key(tmp_path: Path) -> None:
    cache, enc = EmbeddingCache(tmp_path), FakeEncoder()
    assert cache.key(PARTS, ["ab", "c"], enc) != cache.key(PARTS, ["a", "bc"], enc)


@pytest.mark.parametrize("damage", ["sidecar", "tensors", "missing_sidecar"])
def test_damaged_entry_recomputes(tmp_path: Path, damage: str) -> None:
    cache, enc = EmbeddingCache(tmp_path), FakeEncoder()
    first = cache.get_or_compute(PARTS, IDS, TEXTS, enc)
    tensor_path, sidecar_path = cache.paths(cache.key(PARTS, TEXTS, enc))
    if damage == "sidecar":
        sidecar_path.write_text("{not json")
    elif damage == "tensors":
        tensor_path.write_bytes(b"garbage")
    else:
        sidecar_path.unlink()
    again = cache.get_or_compute(PARTS, IDS, TEXTS, enc)
    assert enc.calls == 2
    assert torch.equal(first, again)
    assert cache.load(cache.key(PARTS, TEXTS, enc), IDS) is not None  # repaired


def test_mismatched_lengths_and_empty(tmp_path: Path) -> None:
    cache, enc = EmbeddingCache(tmp_path), FakeEncoder()
    with pytest.raises(ValueError, match="one id per text"):
        cache.get_or_compute(PARTS, IDS[:2], TEXTS, enc)
    with pytest.raises(ValueError, match="for 2 ids"):
        cache.save("k" * 64, IDS[:2], torch.zeros(3, 4))
