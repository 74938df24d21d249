"""The Coder: input checks, labels, save/load, predict."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from kgcode.coder import (
    CODER_FILES,
    FORMAT_VERSION,
    LEXICON_FILE,
    Coder,
    CoderConfig,
    CoderFormatError,
    InvalidNoteError,
    check_note,
    label_codes,
    map_gold_codes,
)
from tests.fixtures.coder.helpers import build_mini_kg, tiny_model_config

NOTE = "Type 2 diabetes mellitus with hyperglycemia.\nHe has used insulin for years."


@pytest.fixture(scope="module")
def kg():  # noqa: ANN201
    return build_mini_kg()


@pytest.fixture(scope="module")
def coder(kg, tmp_path_factory: pytest.TempPathFactory) -> Coder:  # noqa: ANN001
    """An untrained (zero-shot at start) coder over the mini KG, finalized."""
    cfg = CoderConfig.from_dict(tiny_model_config())
    c = Coder.from_kg(cfg, kg, train_counts={"ICD10CM:E11.9": 3})
    c.attach(kg, tmp_path_factory.mktemp("emb"), show_progress_bar=False)
    return c.finalize()


@pytest.fixture(scope="module")
def saved(coder: Coder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return coder.save(tmp_path_factory.mktemp("model") / "coder")


# --------------------------------------------------------------------------- input checks


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("  \n\t ", "whitespace"),
        (None, "NoneType"),
        (b"bytes", "bytes"),
        ("1. 2. --", "no words"),
    ],
)
def test_bad_notes_are_refused(text: object, message: str) -> None:
    with pytest.raises(InvalidNoteError, match=message):
        check_note(text)


def test_a_long_note_is_truncated_with_a_warning() -> None:
    text = "Fever and cough. " * 70_000  # ~1.2 MB
    with pytest.warns(UserWarning, match="truncated"):
        out = check_note(text)
    assert len(out) <= 50_000 and text.startswith(out)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_note("A short note.") == "A short note."


# --------------------------------------------------------------------------- parts


def test_label_codes_and_gold_mapping(kg) -> None:  # noqa: ANN001
    labels = label_codes(kg)
    assert "ICD10CM:E11.9" in labels and "ICD10CM:S72.001A" in labels
    assert not any(kg.graph._node[c]["kind"] in ("chapter", "block") for c in labels)
    row = {c: i for i, c in enumerate(labels)}
    mapping, unmapped = map_gold_codes(
        [
            "ICD10CM:S72.9XX",
            "ICD10CM:T07.XX",
            "ICD10CM:S06.1X7",
            "ICD10CM:E11.99",
            "ICD10CM:E11.9",
            "ICD9CM:250.00",
        ],
        row,
    )
    assert mapping["ICD10CM:S72.9XX"] == "ICD10CM:S72.9XXA"  # 7th character: initial encounter
    assert mapping["ICD10CM:T07.XX"] == "ICD10CM:T07.XXXA"
    assert mapping["ICD10CM:E11.99"] == "ICD10CM:E11.9"  # nearest existing ancestor
    assert "ICD10CM:S06.1X7" not in mapping  # a label already
    assert unmapped == ["ICD9CM:250.00"]


def test_config_refuses_unknown_options() -> None:
    with pytest.raises(ValueError, match="unknown coder option"):
        CoderConfig.from_dict({"encoderr": "hf"})


# --------------------------------------------------------------------------- predict


def test_predict_returns_codes_with_evidence_spans(coder: Coder) -> None:
    out = coder.predict([NOTE, "Fracture of the neck of the left femur."], top_k=3, threshold=0.0)
    assert len(out) == 2 and all(len(codes) == 3 for codes in out)
    first = out[0][0]
    assert set(first) == {"code", "title", "score", "evidence"}
    assert first["code"].startswith("ICD10CM:E1") and 0.0 <= first["score"] <= 1.0
    assert [c["score"] for c in out[0]] == sorted((c["score"] for c in out[0]), reverse=True)
    for ev in first["evidence"]:
        assert NOTE[ev["start"] : ev["end"]] == ev["sentence"]
    assert out[1][0]["code"].startswith("ICD10CM:S72")
    assert coder.predict([NOTE], top_k=3, threshold=1.0) == [[]]


def test_predict_names_the_bad_note(coder: Coder) -> None:
    with pytest.raises(InvalidNoteError, match="note 1: note is whitespace only"):
        coder.predict([NOTE, "   "])
    with pytest.raises(TypeError):
        coder.predict(NOTE)  # type: ignore[arg-type]


def test_zero_shot_part_ranks_by_text(coder: Coder) -> None:
    segs = coder.encode_notes(["Traumatic cerebral edema."])
    vec, mask = coder.pad_segments(segs)
    zs, _ = coder.score_segments(vec, mask, part="zero_shot")
    assert coder.labels[int(zs[0].argmax())].startswith("ICD10CM:S06.1")


# --------------------------------------------------------------------------- save / load


def test_save_load_round_trip_gives_the_same_predictions(coder: Coder, saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == sorted([*CODER_FILES, LEXICON_FILE])
    again = Coder.load(saved)
    assert again.labels == coder.labels and again.threshold == coder.threshold
    a = coder.predict([NOTE], top_k=5, threshold=0.0)
    b = again.predict([NOTE], top_k=5, threshold=0.0)
    assert [c["code"] for c in a[0]] == [c["code"] for c in b[0]]
    assert [c["score"] for c in a[0]] == pytest.approx([c["score"] for c in b[0]], abs=1e-6)
    config = json.loads((saved / "config.json").read_text())
    assert config["format_version"] == FORMAT_VERSION
    assert config["encoder"]["name"] == "hashing" and config["gnn"]["name"] == "rsign"
    assert config["fusion"]["name"] == "hybrid_label_attention"
    assert "torch" in config["versions"] and config["kg"]["sources"]["icd10cm"]
    assert "." not in config["fusion"]["name"]  # registry names, never import paths
    labels = json.loads((saved / "label_index.json").read_text())
    assert labels["rows"]["ICD10CM:E11.9"] == labels["codes"].index("ICD10CM:E11.9")


def test_save_replaces_atomically_and_refuses_foreign_folders(coder: Coder, tmp_path: Path) -> None:
    target = coder.save(tmp_path / "m")
    coder.save(target)  # replacing a coder folder is fine
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        coder.save(foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("missing", [*CODER_FILES, LEXICON_FILE])
def test_load_names_a_missing_file(saved: Path, tmp_path: Path, missing: str) -> None:
    copy = Path(shutil.copytree(saved, tmp_path / "copy"))
    (copy / missing).unlink()
    with pytest.raises(CoderFormatError, match=f"{missing}: missing file"):
        Coder.load(copy)


def test_load_names_the_format_version(saved: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(saved, tmp_path / "copy"))
    config = json.loads((copy / "config.json").read_text())
    config["format_version"] = 99
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(CoderFormatError, match=r"format version 99.*reads versions 1, 2"):
        Coder.load(copy)


def test_load_refuses_damaged_weights_and_folders(saved: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(saved, tmp_path / "copy"))
    (copy / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CoderFormatError, match="model.safetensors"):
        Coder.load(copy)
    with pytest.raises(CoderFormatError, match="no such coder folder"):
        Coder.load(tmp_path / "nowhere")


def test_saved_weights_leave_out_the_frozen_encoder(saved: Path) -> None:
    from safetensors.torch import load_file

    keys = load_file(str(saved / "model.safetensors")).keys()
    assert not any(k.startswith("encoder.") for k in keys)
    assert any(k.startswith("bank.") for k in keys) and any(k.startswith("fusion.") for k in keys)


# --------------------------------------------------------------------------- memory and two-stage scoring


def test_memory_features_and_leave_one_out(coder: Coder) -> None:
    from kgcode.coder import MemoryScorer

    enc = coder.encoder
    notes = ["Type 2 diabetes mellitus without complications.", "Fracture of the neck of the left femur."]
    segs = [enc.encode_segments(t) for t in notes]
    rows = [[coder.label_row["ICD10CM:E11.9"]], [coder.label_row["ICD10CM:S72.002A"]]]
    mem = MemoryScorer(len(coder.labels), coder.text_dim).build(segs, rows, coder.code_text)
    assert mem.num_notes == 2 and mem.ev_vectors.shape == (2, coder.text_dim)
    vec, mask = coder.pad_segments(segs)
    ev, knn, prior = mem.features(vec, mask)
    e119, s72 = rows[0][0], rows[1][0]
    assert ev[0, e119] == pytest.approx(1.0, abs=1e-5) and knn[0, e119] > 0.9 and prior[0, e119] == 1.0
    assert ev[0, s72] < ev[1, s72]
    loo = mem.features(vec, mask, exclude=torch.tensor([0, 1]))[:, :, [e119, s72]]
    assert loo[0, 0, 0] == 0 and loo[2, 0, 0] == 0  # its own evidence and count are left out
    assert loo[1, 0, 0] == pytest.approx(0.0, abs=1e-6)  # the only other note does not carry E11.9
    again = MemoryScorer(len(coder.labels), coder.text_dim)
    again.load_buffers(mem.state_dict())
    again.load_state_dict(mem.state_dict())
    assert torch.equal(again(vec, mask), mem(vec, mask))


def test_two_stage_scoring_agrees_with_exact_scoring_on_the_top(coder: Coder) -> None:
    segs = coder.encode_notes([NOTE, "Fracture of the neck of the left femur after a fall."])
    vec, mask = coder.pad_segments(segs)
    coder.config.rerank_k = 0
    exact, _ = coder.score_segments(vec, mask)
    coder.config.rerank_k = 12
    try:
        fast, _ = coder.score_segments(vec, mask)
    finally:
        coder.config.rerank_k = 0
    assert fast.shape == exact.shape
    for i in range(2):
        top = fast[i].topk(3).indices
        assert torch.allclose(fast[i, top], exact[i, top], atol=1e-4)  # candidates keep their exact score
        rest = torch.ones(len(coder.labels), dtype=torch.bool)
        rest[fast[i].topk(12).indices] = False
        assert fast[i, rest].max() < fast[i, ~rest].min()  # the long tail stays below the candidates


def test_unseen_bias_lifts_only_codes_without_training_notes(coder: Coder, tmp_path: Path) -> None:
    vec, mask = coder.pad_segments(coder.encode_notes([NOTE]))
    base, _ = coder.score_segments(vec, mask)
    unseen = coder.unseen_mask
    assert not bool(unseen[coder.label_row["ICD10CM:E11.9"]]) and bool(unseen.any())
    coder.config.unseen_bias = 0.75
    try:
        shifted, _ = coder.score_segments(vec, mask)
        rows = torch.arange(len(coder.labels))[:5]
        some, _ = coder.score_segments(vec, mask, rows=rows)
        folder = coder.save(tmp_path / "biased")
    finally:
        coder.config.unseen_bias = 0.0
    diff = shifted - base
    assert torch.allclose(diff[0, unseen], torch.tensor(0.75), atol=1e-4)
    assert torch.allclose(diff[0, ~unseen], torch.tensor(0.0), atol=1e-4)
    assert torch.allclose(some, shifted[:, :5], atol=1e-4)
    assert Coder.load(folder).config.unseen_bias == 0.75


def test_unseen_offset_without_a_reranker_is_the_unseen_bias(coder: Coder) -> None:
    assert coder.reranker is None and coder.unseen_offset == coder.config.unseen_bias == 0.0
    try:
        assert coder.set_unseen_offset(1.5) is coder
        assert coder.unseen_offset == coder.config.unseen_bias == 1.5
        assert coder.config.reranked_unseen_bias == 0.0
        for bad in (float("nan"), float("inf"), "high", None):
            with pytest.raises(ValueError, match="expected a finite number"):
                coder.set_unseen_offset(bad)  # type: ignore[arg-type]
        assert coder.unseen_offset == 1.5  # a refused value changes nothing
    finally:
        coder.config.unseen_bias = 0.0


# --------------------------------------------------------------------------- zero-shot code names


def test_zero_shot_maximum_reads_each_code_name_on_its_own(coder: Coder, kg) -> None:  # noqa: ANN001
    from kg.texts import node_names

    names, owner = coder.bank["names"], coder.bank["name_owner"]
    expected = [n for code in coder.labels for n in node_names(kg, code, max_synonyms=8)]
    assert len(owner) == len(expected) > len(coder.labels)  # the synonyms are names of their own
    assert torch.equal(owner, torch.tensor(sorted(owner.tolist())))
    assert torch.allclose(names.float().norm(dim=-1), torch.ones(len(names)), atol=1e-3)
    segs = coder.encode_notes([NOTE, "Fracture of the neck of the left femur."])
    vec, mask = coder.pad_segments(segs)
    got = coder.zero_shot_max(vec, mask)
    for i, seg in enumerate(segs):  # pair by pair: a label's best cosine over sentences x its names
        sent = torch.nn.functional.normalize(seg.vectors.float(), dim=-1)
        for row in range(len(coder.labels)):
            mine = names[owner == row].float()
            want = (sent @ mine.T).max() if len(mine) else torch.tensor(0.0)
            assert got[i, row] == pytest.approx(float(want), abs=1e-5)
    text_side = torch.nn.functional.normalize(coder.code_text.float(), dim=-1)
    joined = (torch.nn.functional.normalize(segs[1].vectors.float(), dim=-1) @ text_side.T).amax(0)
    assert not torch.allclose(got[1], joined)  # not the joined code text


def test_zero_shot_maximum_is_the_same_in_slices_of_the_code_side(
    coder: Coder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kgcode.coder as coder_module

    segs = coder.encode_notes([NOTE, "Fracture of the neck of the left femur.", "Cough."])
    vec, mask = coder.pad_segments(segs)
    whole = coder.zero_shot_max(vec, mask)
    assert len(coder.bank["names"]) > 3
    monkeypatch.setattr(coder_module, "ZS_CHUNK", 3)  # many slices, the last one short
    sliced = coder.zero_shot_max(vec, mask)
    # a 3-row product may take another kernel than the whole one: float rounding only
    assert torch.allclose(sliced, whole, rtol=0.0, atol=1e-6)
    assert not torch.allclose(sliced[0], sliced[1], rtol=0.0, atol=1e-3)  # each note its own maximum


def test_code_names_are_saved_and_checked_on_load(coder: Coder, saved: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    again = Coder.load(saved)
    assert again.config.zero_shot_names
    for key in ("names", "name_owner"):
        assert torch.equal(again.bank[key].float(), coder.bank[key].float())
    tensors = load_file(str(saved / "model.safetensors"))
    for damage in ("drop", "owner"):
        copy = Path(shutil.copytree(saved, tmp_path / damage))
        bad = dict(tensors)
        if damage == "drop":
            del bad["bank.names"]
        else:
            bad["bank.name_owner"] = bad["bank.name_owner"] + len(coder.labels)
        save_file(bad, str(copy / "model.safetensors"))
        expected = r"model.safetensors: the code names .*\(zero_shot_names: True\)"
        with pytest.raises(CoderFormatError, match=expected):
            Coder.load(copy)


def test_a_folder_saved_before_the_code_names_reads_the_code_text(
    kg,
    coder: Coder,
    tmp_path: Path,  # noqa: ANN001
) -> None:
    cfg = CoderConfig.from_dict(tiny_model_config(zero_shot_names=False))
    plain = Coder.from_kg(cfg, kg, train_counts={"ICD10CM:E11.9": 3})
    plain.attach(kg, tmp_path / "emb", show_progress_bar=False).finalize()
    assert "names" not in plain.bank and plain._zs_key == "zs"
    folder = plain.save(tmp_path / "plain")
    config = json.loads((folder / "config.json").read_text())
    del config["coder"]["zero_shot_names"]  # as written before the option existed
    config["format_version"] = 4
    (folder / "config.json").write_text(json.dumps(config))
    old = Coder.load(folder)
    assert not old.config.zero_shot_names
    vec, mask = old.pad_segments(old.encode_notes([NOTE]))
    text_side = old.bank["zs"].float()  # the normalised joined code texts
    want = (torch.nn.functional.normalize(vec[0][mask[0]].float(), dim=-1) @ text_side.T).amax(0)
    assert torch.allclose(old.zero_shot_max(vec, mask)[0], want, atol=1e-5)


def test_code_names_must_be_attached_and_well_formed(kg, coder: Coder) -> None:  # noqa: ANN001
    fresh = Coder.from_kg(CoderConfig.from_dict(tiny_model_config()), kg)
    graph = coder._graph_inputs
    fresh.attach_tensors(coder.code_text, graph)
    with pytest.raises(RuntimeError, match="zero_shot_names is on but no code names are attached"):
        fresh.finalize()
    names, owner = coder.bank["names"].float(), coder.bank["name_owner"]
    with pytest.raises(ValueError, match=r"name vectors \(\d+, 32\) with owners \(3,\)"):
        fresh.attach_tensors(coder.code_text, names=(names, owner[:3]))
    with pytest.raises(ValueError, match="name owners outside the"):
        fresh.attach_tensors(coder.code_text, names=(names, owner + len(coder.labels)))
    fresh.attach_tensors(coder.code_text, graph, names=(names, owner)).finalize()
    assert torch.equal(fresh.bank["name_owner"], owner)


# --------------------------------------------------------------------------- dictionary match


def test_a_version_1_folder_loads_without_the_lexicon(coder: Coder, saved: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    copy = Path(shutil.copytree(saved, tmp_path / "v1"))
    config = json.loads((copy / "config.json").read_text())
    config["format_version"] = 1
    for key in ("lexicon", "lexical_weight", "lexical_min_coverage", "lexical_prior"):
        config["coder"].pop(key)
    (copy / "config.json").write_text(json.dumps(config))
    (copy / LEXICON_FILE).unlink()
    tensors = {k: v for k, v in load_file(str(copy / "model.safetensors")).items() if "lexicon" not in k}
    save_file(tensors, str(copy / "model.safetensors"))
    old = Coder.load(copy)
    assert old.lexicon is None and not old.config.lexicon
    assert old.lexical_logits(coder.encode_notes([NOTE])) is None
    assert old.predict([NOTE], top_k=3, threshold=0.0)[0]


def test_lexical_counts_reliability_and_logits(kg, tmp_path: Path) -> None:  # noqa: ANN001
    cfg = CoderConfig.from_dict(tiny_model_config(lexical_weight=2.0, lexical_prior=0.5))
    c = Coder.from_kg(cfg, kg, train_counts={"ICD10CM:E11.9": 3})
    c.attach(kg, tmp_path / "emb", show_progress_bar=False).finalize()
    train = c.encode_notes(
        ["Type 2 diabetes mellitus without complications.", "No complications of type 2 diabetes mellitus."]
    )
    e119 = c.label_row["ICD10CM:E11.9"]
    totals = c.fit_lexicon(train, [[e119], []])
    assert totals["hits"] >= 1 and totals["matches"] > totals["hits"]
    assert c.lexicon_counts[0, e119] == 2 and c.lexicon_counts[1, e119] == 1
    rel = c.lexical_reliability()
    assert rel[e119] == pytest.approx((1 + 0.5) / (2 + 1))
    segs = c.encode_notes([NOTE])
    cov, best = c.lexical_match(segs)
    e1165 = c.label_row["ICD10CM:E11.65"]  # "Type 2 diabetes mellitus with hyperglycemia": sentence 0
    assert cov[0, e1165] == pytest.approx(1.0) and best[0, e1165] == 0
    assert ((cov > 0) == (best >= 0)).all()
    lexical = c.lexical_logits(segs)
    assert lexical is not None and torch.allclose(lexical, 2.0 * cov * rel)
    vec, mask = c.pad_segments(segs)
    plain, _ = c.score_segments(vec, mask)
    with_lex, _ = c.score_segments(vec, mask, lexical=lexical)
    assert torch.allclose(with_lex - plain, lexical, atol=1e-5)
    out = c.predict([NOTE], top_k=3, threshold=0.0)[0]
    assert out[0]["code"] == "ICD10CM:E11.65"
    first = out[0]["evidence"][0]
    assert first["matched"] and first["sentence"].startswith("Type 2 diabetes mellitus with hyperglycemia")
    again = Coder.load(c.save(tmp_path / "lex"))
    assert torch.equal(again.lexicon_counts, c.lexicon_counts) and again.config.lexical_weight == 2.0
    assert [r["code"] for r in again.predict([NOTE], top_k=3, threshold=0.0)[0]] == [r["code"] for r in out]


def test_two_stage_scoring_puts_dictionary_matches_among_the_candidates(kg, tmp_path: Path) -> None:  # noqa: ANN001
    # the joined code text as the zero-shot side: each code's best name alone would already put
    # the named code first without the dictionary term
    cfg = CoderConfig.from_dict(tiny_model_config(lexical_weight=50.0, rerank_k=2, zero_shot_names=False))
    c = Coder.from_kg(cfg, kg).attach(kg, tmp_path / "emb", show_progress_bar=False).finalize()
    segs = c.encode_notes(["Fracture of the neck of the left femur."])
    vec, mask = c.pad_segments(segs)
    lexical = c.lexical_logits(segs)
    assert lexical is not None
    scores, _ = c.score_segments(vec, mask, lexical=lexical)
    best = lexical[0].max()
    assert best > 0 and lexical[0, int(scores[0].argmax())] == best  # a full match tops the list
    plain, _ = c.score_segments(vec, mask)
    assert lexical[0, int(plain[0].argmax())] < best  # without the dictionary term it would not


def test_load_names_a_damaged_lexicon(saved: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(saved, tmp_path / "copy"))
    data = json.loads((copy / LEXICON_FILE).read_text())
    (copy / LEXICON_FILE).write_text(json.dumps({**data, "format_version": 7}))
    with pytest.raises(CoderFormatError, match=r"lexicon.json: not a kgcode-lexicon of format version 1"):
        Coder.load(copy)
    (copy / LEXICON_FILE).write_text("{not json")
    with pytest.raises(CoderFormatError, match=r"lexicon.json: unreadable JSON"):
        Coder.load(copy)
    from safetensors.torch import load_file, save_file

    fresh = Path(shutil.copytree(saved, tmp_path / "fresh"))
    tensors = {k: v for k, v in load_file(str(fresh / "model.safetensors")).items() if k != "lexicon.hits"}
    save_file(tensors, str(fresh / "model.safetensors"))
    with pytest.raises(CoderFormatError, match=r"model.safetensors: no lexicon.matches / lexicon.hits"):
        Coder.load(fresh)


# --------------------------------------------------------------------------- inference precision


def test_auto_dtype_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from kgcode import coder as coder_module

    monkeypatch.setattr(coder_module, "native_bf16", lambda: False)
    assert coder_module.resolve_inference_dtype("auto") == "fp32"
    monkeypatch.setattr(coder_module, "native_bf16", lambda: True)
    assert coder_module.resolve_inference_dtype("auto") == "bf16"
    assert coder_module.resolve_inference_dtype("fp32") == "fp32"
    assert coder_module.resolve_inference_dtype("bfloat16") == "bf16"


def test_int8_is_explicit_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from kgcode import coder as coder_module

    assert coder_module.resolve_inference_dtype("int8") == "int8"
    for native in (False, True):  # auto never picks int8: it changes the scores
        monkeypatch.setattr(coder_module, "native_bf16", lambda native=native: native)
        assert coder_module.resolve_inference_dtype("auto") != "int8"


def test_int8_routes_notes_through_the_encoders_int8_copy(
    kg,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kgcode import coder as coder_module
    from text_encoder.hashing import HashingTextEncoder

    c = Coder.from_kg(CoderConfig.from_dict(tiny_model_config()), kg)
    c.attach(kg, tmp_path / "emb", show_progress_bar=False).finalize()
    with pytest.raises(ValueError, match="no int8 version"):
        c.set_inference_dtype("int8")
    assert c.config.inference_dtype == "fp32"  # unchanged after the refusal
    fp32 = c.predict([NOTE], top_k=3, threshold=0.0)[0]
    twin = HashingTextEncoder(dim=32, seed=1)  # stands in for an int8 copy: other vectors, same segmentation
    c.encoder.quantized = lambda: twin  # type: ignore[method-assign]
    c.set_inference_dtype("int8")
    assert c.runtime_dtype == "int8" and c.note_encoder is twin
    assert all(v.dtype == torch.float32 for v in c.bank.values() if v.is_floating_point())  # scoring: fp32
    assert c._zs_key == "names" and c.bank["name_owner"].dtype == torch.int64
    segs = c.encode_notes([NOTE])
    assert torch.equal(segs[0].vectors, twin.encode_segments(NOTE).vectors)
    int8 = c.predict([NOTE], top_k=3, threshold=0.0)[0]
    assert [r["score"] for r in int8] != [r["score"] for r in fp32]
    # the zero-shot product with every code name runs in int8 too, built once per bank
    vec, mask = c.pad_segments(segs)
    product = c._zs_int8()
    assert c._zs_int8() is product
    zs_int8 = c.zero_shot_max(vec, mask)
    c.set_inference_dtype("fp32")
    zs_fp32 = c.zero_shot_max(vec, mask)
    assert (zs_int8 - zs_fp32).abs().max() < 0.05 and not torch.equal(zs_int8, zs_fp32)
    c.set_inference_dtype("int8")
    assert c._zs_int8() is product  # the same bank: reused
    c.bank = {**c.bank, "names": c.bank["names"].clone()}  # a new bank (finalize, load): rebuilt
    assert c._zs_int8() is not product
    # in slices of 3 code rows, each its own int8 product: the same numbers (one scale per row)
    monkeypatch.setattr(coder_module, "ZS_CHUNK", 3)
    c.bank = {**c.bank, "names": c.bank["names"].clone()}
    assert len(c._zs_int8()) == -(-len(c.bank["names"]) // 3) > 1
    assert torch.equal(c.zero_shot_max(vec, mask), zs_int8)
    with pytest.raises(ValueError, match="expected one of auto, fp32, bf16, int8"):
        c.set_inference_dtype("fp8")


def test_explicit_bf16_without_native_support_warns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from kgcode import coder as coder_module

    monkeypatch.setattr(coder_module, "native_bf16", lambda: False)
    monkeypatch.setattr(coder_module, "_DTYPE_WARNED", set())
    with caplog.at_level("WARNING", logger="kgcode.coder"):
        assert coder_module.resolve_inference_dtype("bf16") == "bf16"
    assert "without native bf16" in caplog.text


def test_onnx_backend_routes_notes_through_the_encoders_onnx_copy(
    kg,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    from kgcode import coder as coder_module
    from text_encoder.hashing import HashingTextEncoder

    pytest.importorskip("onnxruntime", reason="the onnx backend needs onnxruntime (kgcode[onnx])")
    monkeypatch.setenv("KGCODE_HOME", str(tmp_path / "home"))
    c = Coder.from_kg(CoderConfig.from_dict(tiny_model_config()), kg)
    c.attach(kg, tmp_path / "emb", show_progress_bar=False).finalize()
    with pytest.raises(ValueError, match="has no ONNX Runtime version"):
        c.set_inference_backend("onnx")
    assert (c.config.inference_backend, c.runtime_backend) == ("torch", "torch")  # unchanged
    calls: list[tuple[bool, Path]] = []
    twin = HashingTextEncoder(dim=32, seed=1)  # stands in for an ONNX Runtime copy

    def onnx_runtime(*, int8: bool, cache_dir: Path) -> HashingTextEncoder:
        calls.append((int8, Path(cache_dir)))
        return twin

    c.encoder.onnx_runtime = onnx_runtime  # type: ignore[method-assign]
    c.set_inference_backend("onnx")
    assert c.runtime_backend == "onnx" and c.runtime_dtype == "fp32" and c.note_encoder is twin
    assert calls[-1] == (False, tmp_path / "home" / "onnx")
    assert torch.equal(c.encode_notes([NOTE])[0].vectors, twin.encode_segments(NOTE).vectors)
    # the zero-shot product with every code name runs in ONNX Runtime, fp32, built once per bank
    segs = c.encode_notes([NOTE])
    vec, mask = c.pad_segments(segs)
    zs_onnx = c.zero_shot_max(vec, mask)
    product = c._zs_onnx()
    assert c._zs_onnx() is product
    c.bank = {**c.bank, "names": c.bank["names"].clone()}  # a new bank: rebuilt
    assert c._zs_onnx() is not product
    # several notes, a few sentences per ONNX Runtime call: each note's own maximum, as in one call
    many = c.encode_notes([NOTE, "Cough. Fever.", "Fracture of the neck of the left femur."])
    vec3, mask3 = c.pad_segments(many)
    at_once = c.zero_shot_max(vec3, mask3)
    monkeypatch.setattr(coder_module, "ZS_ROWS", 1)  # every note a call of its own
    assert torch.allclose(c.zero_shot_max(vec3, mask3), at_once, rtol=0.0, atol=1e-6)
    assert torch.allclose(at_once[0], zs_onnx[0], rtol=0.0, atol=1e-6)
    c.set_inference("fp32", "torch")
    assert torch.allclose(zs_onnx, c.zero_shot_max(vec, mask), atol=1e-5)
    assert torch.allclose(at_once, c.zero_shot_max(vec3, mask3), atol=1e-5)
    c.set_inference("fp32", "onnx")
    c.encoder.quantized = lambda: twin  # type: ignore[method-assign]
    c.set_inference("int8", "onnx")
    c.note_encoder  # noqa: B018
    assert calls[-1][0] is True and c.runtime_dtype == "int8"
    with pytest.raises(ValueError, match="bf16 runs on the torch backend only"):
        c.set_inference_dtype("bf16")
    assert (c.config.inference_dtype, c.config.inference_backend) == ("int8", "onnx")
    with pytest.raises(ValueError, match="expected one of torch, onnx"):
        c.set_inference_backend("tensorrt")
    # auto means fp32 on onnx, whatever the CPU
    monkeypatch.setattr(coder_module, "native_bf16", lambda: True)
    assert coder_module.resolve_inference_backend("onnx", "auto") == ("onnx", "fp32")
    assert coder_module.resolve_inference_backend(None, "auto") == ("torch", "bf16")
    c.set_inference("fp32", "torch")
    assert c.note_encoder is c.encoder


def test_bank_dtype_follows_the_resolved_dtype(kg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    from kgcode import coder as coder_module

    for native, expected in ((False, torch.float32), (True, torch.bfloat16)):
        monkeypatch.setattr(coder_module, "native_bf16", lambda native=native: native)
        c = Coder.from_kg(CoderConfig.from_dict(tiny_model_config(inference_dtype="auto")), kg)
        c.attach(kg, tmp_path / "emb", show_progress_bar=False).finalize()
        assert c.runtime_dtype == ("bf16" if native else "fp32")
        assert c.bank["zs"].dtype == expected and c.bank["names"].dtype == expected
        assert c.bank["name_owner"].dtype == torch.int64


def test_unknown_dtype_is_refused(kg) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="inference_dtype='fp8'"):
        Coder.from_kg(CoderConfig.from_dict(tiny_model_config(inference_dtype="fp8")), kg)


def test_a_bf16_bank_is_widened_where_bf16_is_not_native(
    kg,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kgcode import coder as coder_module

    monkeypatch.setattr(coder_module, "native_bf16", lambda: True)
    c = Coder.from_kg(CoderConfig.from_dict(tiny_model_config(inference_dtype="auto")), kg)
    c.attach(kg, tmp_path / "emb", show_progress_bar=False).finalize()
    folder = c.save(tmp_path / "coder")
    monkeypatch.setattr(coder_module, "native_bf16", lambda: False)
    again = Coder.load(folder)
    assert again.runtime_dtype == "fp32"
    assert all(v.dtype == torch.float32 for v in again.bank.values() if v.is_floating_point())
    assert again.bank["name_owner"].dtype == torch.int64
    assert len(again.predict([NOTE], top_k=3, threshold=0.0)[0]) == 3
