"""The ONNX Runtime copy of the bundled MiniLM: exported once, close to torch, cached atomically."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from text_encoder import onnx_backend
from text_encoder.hashing import HashingTextEncoder
from text_encoder.hf import HFTextEncoder
from text_encoder.onnx_backend import OnnxEncoderModel, OnnxMatMul, onnx_cache_folder

pytest.importorskip("onnxruntime", reason="the onnx backend needs onnxruntime (pip install 'kgcode[onnx]')")
pytest.importorskip("onnx", reason="the onnx backend needs onnx (pip install 'kgcode[onnx]')")

NOTES = [
    "Patient with type 2 diabetes mellitus and chronic kidney disease stage 3.\nNo chest pain.",
    "A 45-year-old woman presented with acute appendicitis. An appendectomy was performed.",
    "Fever.",
]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[HFTextEncoder, Path, dict[str, torch.Tensor]]:
    """MiniLM, its fp32 vectors before any export, and a cache holding its fp32 and int8 exports."""
    enc = HFTextEncoder(max_length=64).load()
    before = {t: enc.encode_segments(t).vectors for t in NOTES}
    cache = tmp_path_factory.mktemp("onnx")
    enc.onnx_runtime(int8=True, cache_dir=cache)
    return enc, cache, before


def _cosines(a: HFTextEncoder, b: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([(a.encode_segments(t).vectors * b[t]).sum(1) for t in NOTES])


def test_fp32_and_int8_copies_match_torch(exported) -> None:  # noqa: ANN001
    enc, cache, before = exported
    fp32 = enc.onnx_runtime(int8=False, cache_dir=cache)
    int8 = enc.onnx_runtime(int8=True, cache_dir=cache)
    assert isinstance(fp32.model, OnnxEncoderModel) and isinstance(int8.model, OnnxEncoderModel)
    assert fp32.model.path.endswith("model.onnx") and int8.model.path.endswith("model.int8.onnx")
    assert _cosines(fp32, before).min() > 0.9999  # the fused graph computes the same vectors
    cos = _cosines(int8, before)
    assert cos.min() > 0.95 and cos.mean() > 0.98
    assert [s.spans for s in int8.encode_segments_many(NOTES)] == [enc.segment(t) for t in NOTES]
    # the export leaves the torch encoder as it was
    assert _cosines(enc, before).min() > 0.99999
    assert int8.device == torch.device("cpu") and int8.dim == enc.dim


def test_copies_are_reused_in_the_process_and_from_disk(exported, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    enc, cache, before = exported
    assert enc.onnx_runtime(int8=True, cache_dir=cache) is enc.onnx_runtime(int8=True, cache_dir=cache)

    def no_export(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("exported again instead of reading the cache")

    monkeypatch.setattr(onnx_backend, "_export_fp32", no_export)
    monkeypatch.setattr(onnx_backend, "_quantize", no_export)
    fresh = HFTextEncoder(max_length=64)  # another process, in effect: opens the files only
    assert _cosines(fresh.onnx_runtime(int8=True, cache_dir=cache), before).mean() > 0.98
    folder = onnx_cache_folder(cache, enc.fingerprint())
    assert sorted(p.name for p in folder.iterdir()) == ["fingerprint.json", "model.int8.onnx", "model.onnx"]
    assert [p.name for p in cache.iterdir()] == [folder.name]  # no temporary folder left behind


def test_the_cache_key_follows_the_encoder(tmp_path: Path) -> None:
    a = onnx_cache_folder(tmp_path, HFTextEncoder(max_length=64).fingerprint())
    assert a == onnx_cache_folder(tmp_path, HFTextEncoder(max_length=64, batch_size=3).fingerprint())
    assert a != onnx_cache_folder(tmp_path, HFTextEncoder(max_length=32).fingerprint())
    assert a.parent == tmp_path


def test_an_export_that_disagrees_is_refused_and_leaves_nothing(
    exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    enc, _, _ = exported
    monkeypatch.setattr(onnx_backend, "EXPORT_TOLERANCE", -1.0)
    with pytest.raises(ValueError, match=r"differs from torch by .* use the torch backend") as err:
        HFTextEncoder(max_length=64).onnx_runtime(int8=True, cache_dir=tmp_path / "onnx")
    assert "\n" not in str(err.value)
    assert list((tmp_path / "onnx").iterdir()) == []  # nothing half-written


def test_missing_onnxruntime_and_encoders_without_onnx(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(onnx_backend, "onnx_available", lambda: False)
    with pytest.raises(ValueError, match=r"pip install 'kgcode\[onnx\]'"):
        HFTextEncoder(max_length=64).onnx_runtime(int8=False, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="has no ONNX Runtime version"):
        HashingTextEncoder(dim=8).onnx_runtime(int8=False, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_training_mode_drops_the_copies(exported) -> None:  # noqa: ANN001
    enc, cache, _ = exported
    twin = enc.onnx_runtime(int8=True, cache_dir=cache)
    fresh = HFTextEncoder(max_length=64)
    fresh.model, fresh._tokenizer = enc.model, enc.tokenizer
    fresh.__dict__["_onnx"] = {("int8", str(cache.resolve())): twin}
    fresh.train()
    assert fresh.__dict__["_onnx"] == {}
    fresh.eval()


def test_an_unwritable_cache_or_a_broken_export_is_one_line(exported, tmp_path: Path) -> None:  # noqa: ANN001
    enc, cache, _ = exported
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(ValueError, match=r"cannot write the ONNX export under .*\(set KGCODE_HOME\)") as err:
        HFTextEncoder(max_length=64).onnx_runtime(int8=True, cache_dir=blocker / "onnx")
    assert "\n" not in str(err.value)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="cannot open the ONNX export .* delete its folder") as err:
        OnnxEncoderModel(broken)
    assert "\n" not in str(err.value)


def test_onnx_matmul_is_the_fp32_product() -> None:
    torch.manual_seed(0)
    weight = torch.nn.functional.normalize(torch.randn(500, 24), dim=1)
    x = torch.randn(7, 24)
    product = OnnxMatMul(weight)
    out = product(x)
    assert out.shape == (7, 500) and out.dtype == torch.float32
    assert torch.allclose(out, x @ weight.T, atol=1e-5)
    assert product(torch.zeros(0, 24)).shape == (0, 500)
    assert "out=500, in=24" in repr(product)
