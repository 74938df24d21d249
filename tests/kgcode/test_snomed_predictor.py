"""The SNOMED CT link predictor: leakage guard, prediction format, save/load, calibration helpers.

A synthetic world (30 made-up diseases, each an ICD-10-CM category with two codes, a DO concept
and a more specific DO child, a Mondo equivalent, an ICD-9-CM code with GEM edges, and SNOMED CT
ids) gives 60 linked codes, enough to hold some out. Text vectors come from a hash-based
bag-of-words stand-in encoder (no model download); one test runs the real MiniLM on a handful of
texts.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kg.graph import KnowledgeGraph
from kgcode.snomed_predictor import (
    FORMAT_VERSION,
    LinkGraph,
    Predictor,
    PredictorConfig,
    PredictorFormatError,
    _choose_threshold,
    _fit_calibration,
    default_predictor_dir,
    embed_names,
    embed_node_texts,
    linked_codes,
    load_default_predictor,
    train_predictor,
)
from ontologies.base import Concept, Relation
from ontologies.codes import verhoeff_valid

WORDS = [
    "amber",
    "basil",
    "cedar",
    "delta",
    "ember",
    "fable",
    "garnet",
    "harbor",
    "iris",
    "jasper",
    "kelvin",
    "lumen",
    "maple",
    "nectar",
    "onyx",
    "pepper",
    "quartz",
    "raven",
    "sable",
    "tundra",
    "umber",
    "velvet",
    "willow",
    "xenon",
    "yarrow",
    "zephyr",
    "acorn",
    "birch",
    "cobalt",
    "dune",
]


def _sctid(n: int) -> str:
    base = str(100000 + n)
    for check in "0123456789":
        if verhoeff_valid(base + check):
            return f"SCTID:{base}{check}"
    raise AssertionError("no Verhoeff check digit")  # pragma: no cover


def make_world(strip: frozenset[str] = frozenset()) -> KnowledgeGraph:
    """The synthetic KG; ``strip``: codes whose xrefs are never added."""
    kg = KnowledgeGraph()
    concepts = [Concept("ICD10CM:17", "ICD10CM", "Made-up diseases (Q00-Q29)", kind="chapter")]
    relations: list[Relation] = []

    def xref(src: str, dst: str, match: str) -> None:
        if dst not in strip:
            relations.append(Relation(src, dst, "xref", attrs={"match": match}))

    for i, w in enumerate(WORDS):
        cat, acute, unspec = f"ICD10CM:Q{i:02d}", f"ICD10CM:Q{i:02d}.0", f"ICD10CM:Q{i:02d}.9"
        do, do_acute, mondo, icd9 = (
            f"DOID:{1000 + i}",
            f"DOID:{2000 + i}",
            f"MONDO:{i:07d}",
            f"ICD9CM:{700 + i}",
        )
        concepts += [
            Concept(cat, "ICD10CM", f"{w.capitalize()} disease", kind="category"),
            Concept(acute, "ICD10CM", f"Acute {w} disease", kind="code", billable=True),
            Concept(unspec, "ICD10CM", f"{w.capitalize()} disease, unspecified", kind="code", billable=True),
            Concept(do, "DOID", f"{w} disease", synonyms=[f"{w} syndrome"]),
            Concept(do_acute, "DOID", f"acute {w} disease"),
            Concept(mondo, "MONDO", f"{w} disorder"),
            Concept(icd9, "ICD9CM", f"{w.capitalize()} disease NOS", kind="code", billable=True),
            Concept(_sctid(2 * i), "SCTID"),
            Concept(_sctid(2 * i + 1), "SCTID"),
        ]
        relations += [
            Relation(cat, "ICD10CM:17", "is_a"),
            Relation(acute, cat, "is_a"),
            Relation(unspec, cat, "is_a"),
            Relation(do_acute, do, "is_a"),
            Relation(mondo, do, "equivalent", attrs={"match": "exact"}),
            Relation(unspec, icd9, "gem_equivalent", attrs={"approximate": True}),
            Relation(icd9, cat, "gem_equivalent", attrs={"approximate": True}),
        ]
        xref(do, cat, "dbxref")
        xref(do, icd9, "dbxref")
        xref(do, _sctid(2 * i), "dbxref")
        xref(mondo, cat, "exact")
        xref(mondo, _sctid(2 * i), "exact")
        xref(do_acute, acute, "dbxref")
        xref(do_acute, _sctid(2 * i + 1), "dbxref")
    kg.add_concepts(concepts)
    kg.add_relations(relations)
    return kg


class HashEncoder:
    """A stand-in text encoder: hashed bag of words (and word bigrams), L2-normalised."""

    name = "hash"
    dim = 64

    def encode(
        self, texts: list[str], batch_size: int | None = None, show_progress_bar: bool | None = None
    ) -> torch.Tensor:
        out = torch.zeros(len(texts), self.dim)
        for i, text in enumerate(texts):
            toks = [t.strip(",;:").lower() for t in text.split()]
            for tok in [*toks, *(a + " " + b for a, b in zip(toks, toks[1:], strict=False))]:
                h = int(hashlib.md5(tok.encode()).hexdigest(), 16)
                out[i, h % self.dim] += 1.0
        return torch.nn.functional.normalize(out, dim=1)

    def fingerprint(self) -> dict[str, str]:
        return {"name": self.name}


SMALL = PredictorConfig(
    gnn_kwargs={"hidden_dim": 16, "out_dim": 16, "num_layers": 2, "num_bases": 2, "dropout": 0.0},
    gnn_epochs=15,
    gnn_negatives=32,
    gnn_hard_negatives=4,
    pca_dim=8,
    folds=2,
    top_text=8,
    top_gnn=8,
    reranker_hidden=16,
    reranker_epochs=60,
)
HOLDOUT = frozenset(
    {"ICD10CM:Q03", "ICD10CM:Q07.0", "ICD10CM:Q11", "ICD10CM:Q15.0", "ICD10CM:Q21", "ICD10CM:Q26.0"}
)


def _train(kg: KnowledgeGraph, holdout: frozenset[str] = frozenset(), seed: int = 0) -> Predictor:
    return train_predictor(
        kg,
        holdout=holdout,
        seed=seed,
        config=SMALL,
        encoder=HashEncoder(),
        embedding_cache=None,
        progress=False,
    )


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> object:
    """One torch thread: on a small shared machine, thread hand-offs dominate tiny graphs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def world() -> KnowledgeGraph:
    return make_world()


@pytest.fixture(scope="module")
def predictor(world: KnowledgeGraph) -> Predictor:
    return _train(world, HOLDOUT)


def test_linked_codes(world: KnowledgeGraph) -> None:
    links = linked_codes(world)
    assert len(links) == 60
    assert links["ICD10CM:Q00"] == [_sctid(0)]
    assert links["ICD10CM:Q00.0"] == [_sctid(1)]
    assert "ICD10CM:17" not in links  # chapters are not counted


def test_link_graph_has_no_held_out_link(world: KnowledgeGraph) -> None:
    lg = LinkGraph.from_kg(world, exclude=HOLDOUT)
    for code in HOLDOUT:
        assert not lg.code_links.get(code)
        assert all(code not in codes for codes in lg.concept_codes.values())
    # the graph encoder never gets an ICD-10-CM cross-reference as an edge, of any code
    rel_names = ["is_a", "gem_equivalent", "xref_icd9", "xref_sctid", "equivalent"]
    xref_types = {rel_names.index("xref_icd9"), rel_names.index("xref_sctid")}
    for (s, d), t in zip(lg.edge_index.T, lg.edge_type, strict=True):
        if int(t) in xref_types:
            assert lg.ids[d].startswith(("ICD9CM:", "SCTID:")), (lg.ids[s], lg.ids[d])
    # the other codes keep theirs
    assert lg.code_links["ICD10CM:Q00"] == {"DOID:1000", "MONDO:0000000"}
    # and the caller's graph is untouched
    assert world.to_snomed("ICD10CM:Q03")


def test_no_leakage_from_held_out_links(world: KnowledgeGraph, predictor: Predictor) -> None:
    held = sorted(HOLDOUT)
    before = predictor.sct_scores(held)
    # A graph that never had the held-out links gives the same predictor, to the last digit.
    stripped = make_world(strip=HOLDOUT)
    assert not any(stripped.to_snomed(c) for c in held)
    other = _train(stripped)
    after = other.sct_scores(held)
    assert before == after
    # Adding the held-out links back to the graph a predictor was trained on changes nothing:
    # the predictor only reads its own stripped copy.
    stripped.add_relations(r for r in world.iter_relations() if r.relation == "xref" and r.dst in HOLDOUT)
    assert all(stripped.to_snomed(c) for c in held)
    assert other.sct_scores(held) == after


def _leaks(p: Predictor, codes: Collection[str]) -> list[str]:
    """Every place a held-out code's own cross-references could reach the predictor.

    The link graph the predictor keeps (and computed its features and encoder inputs from), the
    encoder's edge_index, the feature context's per-concept code sets and the training folds.
    """
    lg = p.lg
    assert p.ctx.lg is lg
    found = [f"code_links[{c}]" for c in codes if lg.code_links.get(c)]
    found += [f"concept_codes[{k}] has {c}" for k, v in lg.concept_codes.items() for c in codes if c in v]
    found += [f"cluster_codes has {c}" for v in p.ctx.cluster_codes for c in codes if c in v]
    found += [f"training fold of {c}" for c in codes if c in p.folds]
    held_rows = {i for i, n in enumerate(lg.ids) if n in set(codes)}
    concept_rows = {i for i, n in enumerate(lg.ids) if n.startswith(("DOID:", "MONDO:"))}
    edge_index, _ = lg.tensors()
    for s, d in edge_index.T.tolist():
        if (s in held_rows and d in concept_rows) or (d in held_rows and s in concept_rows):
            found.append(f"edge {lg.ids[s]} - {lg.ids[d]}")
    return found


def test_held_out_links_are_nowhere_in_what_the_predictor_used(
    world: KnowledgeGraph, predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    held = sorted(HOLDOUT)
    assert all(world.to_snomed(c) for c in held)  # the caller's graph has them
    assert _leaks(predictor, held) == []
    assert predictor.lg.excluded == HOLDOUT and predictor.card["holdout_codes"] == len(HOLDOUT)
    # A leaky training (the exclusion switched off) is caught by the same checks, and answers
    # differently for the held-out codes: the check above is not vacuous.
    real_from_kg = LinkGraph.from_kg.__func__  # type: ignore[attr-defined]

    def leaky_from_kg(cls: type[LinkGraph], kg: KnowledgeGraph, exclude: Collection[str] = ()) -> LinkGraph:
        return real_from_kg(cls, kg)

    monkeypatch.setattr(LinkGraph, "from_kg", classmethod(leaky_from_kg))
    leaky = _train(world, HOLDOUT)
    assert {f"code_links[{c}]" for c in held} <= set(_leaks(leaky, held))
    assert leaky.sct_scores(held) != predictor.sct_scores(held)
    links = linked_codes(world)
    top1 = [leaky.predict(c, top_k=1)[0]["target"] for c in held]
    assert all(t in links[c] for c, t in zip(held, top1, strict=True))  # it saw the answers


def test_learns_the_held_out_links(predictor: Predictor, world: KnowledgeGraph) -> None:
    links = linked_codes(world)
    held = sorted(HOLDOUT)
    top1 = [predictor.predict(c, top_k=1) for c in held]
    hits = sum(1 for c, r in zip(held, top1, strict=True) if r and r[0]["target"] in links[c])
    assert hits >= len(held) - 1, top1


def test_predict_format(predictor: Predictor, world: KnowledgeGraph) -> None:
    out = predictor.predict("q00.9", top_k=3)
    assert 1 <= len(out) <= 3
    assert [set(r) for r in out] == [{"target", "score", "via", "via_label"}] * len(out)
    scores = [r["score"] for r in out]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    for r in out:
        assert r["target"].startswith("SCTID:")
        assert r["target"] in {x["sctid"] for x in _carried(world, r["via"])}
        assert r["via_label"] == world.graph.nodes[r["via"]]["title"]
    assert out[0]["target"] == _sctid(2 * 0)  # Q00.9 "amber disease, unspecified" -> amber disease
    assert predictor.predict("ICD10CM:Q00.9", top_k=0) == []
    assert predictor.predict("Z99.99") == []  # not in the graph
    assert predictor.predict("not a code") == []
    assert predictor.predict("ICD9CM:700") == []  # other systems are not predicted
    many = predictor.predict_many(["Q00.9", "ICD10CM:Q01.9", "nonsense"], top_k=2)
    assert set(many) == {"ICD10CM:Q00.9", "ICD10CM:Q01.9", "nonsense"}
    assert many["nonsense"] == []
    assert 0.0 <= predictor.threshold <= 1.0


def _carried(kg: KnowledgeGraph, via: str) -> list[dict[str, str]]:
    return [{"sctid": r.dst} for r in kg.edges_of(via, relations=["xref"]) if r.dst.startswith("SCTID:")]


def test_save_and_load_round_trip(tmp_path: Path, predictor: Predictor, world: KnowledgeGraph) -> None:
    folder = predictor.save(tmp_path / "linker")
    names = {p.name for p in folder.iterdir()}
    assert names == {
        "config.json",
        "model.safetensors",
        "index.json",
        "embeddings.safetensors",
        "model_card.json",
    }
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["format_version"] == FORMAT_VERSION
    assert {"kgcode", "torch", "torch_geometric"} <= set(cfg["versions"])
    assert cfg["gnn"]["name"] == "rgcn"
    card = json.loads((folder / "model_card.json").read_text())
    assert card["seed"] == 0 and card["holdout_codes"] == len(HOLDOUT)
    # loaded with the graph it was trained on (the one without the held-out links)
    loaded = Predictor.load(folder, make_world(strip=HOLDOUT))
    codes = ["ICD10CM:Q00.9", "ICD10CM:Q05", "ICD10CM:Q07.0"]
    for a, b in zip(predictor.sct_scores(codes), loaded.sct_scores(codes), strict=True):
        assert a.keys() == b.keys()
        assert all(math.isclose(a[k], b[k], abs_tol=2e-3) for k in a)  # fp16 embeddings on disk
    assert loaded.threshold == predictor.threshold
    # saving again replaces the folder atomically; no temporary folder is left behind
    predictor.save(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linker"]


def test_load_errors(tmp_path: Path, predictor: Predictor, world: KnowledgeGraph) -> None:
    folder = predictor.save(tmp_path / "linker")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["format_version"] = FORMAT_VERSION + 1
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PredictorFormatError, match="version"):
        Predictor.load(folder, world)
    (folder / "index.json").unlink()
    with pytest.raises(PredictorFormatError, match="index.json"):
        Predictor.load(folder, world)
    with pytest.raises(FileExistsError):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "precious.txt").write_text("x")
        predictor.save(tmp_path / "other")


FILES = ("config.json", "model.safetensors", "index.json", "embeddings.safetensors", "model_card.json")


@pytest.mark.parametrize("name", FILES)
def test_load_error_for_each_missing_file(tmp_path: Path, predictor: Predictor, name: str) -> None:
    folder = predictor.save(tmp_path / "linker")
    (folder / name).unlink()
    with pytest.raises(PredictorFormatError, match=f"{name}: missing") as info:
        Predictor.load(folder, make_world(strip=HOLDOUT))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("name", "change", "text"),
    [
        ("config.json", {"format_version": FORMAT_VERSION + 1}, "retrain with `kgcode train-linker`"),
        ("config.json", {"format": "kgcode-model"}, "format 'kgcode-model'"),
        ("config.json", {"features": ["text_name"]}, "feature list"),
        ("config.json", "{not json", "unreadable JSON"),
        ("index.json", {"node_ids": None}, "node_ids"),
        ("model.safetensors", b"\x80\x04pickle?", "model.safetensors: unreadable"),
        ("embeddings.safetensors", b"", "embeddings.safetensors: unreadable"),
    ],
)
def test_load_errors_are_one_line(
    tmp_path: Path, predictor: Predictor, name: str, change: dict[str, Any] | str | bytes, text: str
) -> None:
    folder = predictor.save(tmp_path / "linker")
    path = folder / name
    if isinstance(change, dict):
        path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    elif isinstance(change, str):
        path.write_text(change)
    else:
        path.write_bytes(change)
    with pytest.raises(PredictorFormatError, match=re.escape(text)) as info:
        Predictor.load(folder, make_world(strip=HOLDOUT))
    assert "\n" not in str(info.value)


def test_folder_follows_the_model_folder_rules(tmp_path: Path, predictor: Predictor) -> None:
    from safetensors import safe_open

    folder = predictor.save(tmp_path / "linker")
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["format"] == "kgcode-snomed-predictor"
    assert {"kgcode", "torch"} <= set(cfg["versions"]) and cfg["kg_sources"] == predictor.lg.sources
    # model.safetensors is exactly the state dict (no pickle anywhere in the folder)
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(predictor.model.state_dict())
    assert not [p for p in folder.iterdir() if p.suffix in (".pt", ".pth", ".pkl", ".bin")]
    card = json.loads((folder / "model_card.json").read_text())
    assert {"training_data", "oof_ranking", "oof_precision_at_threshold", "threshold"} <= set(card)
    assert card["training_data"]["training_links"] > 0
    assert 0.0 <= card["oof_ranking"]["hits@1"] <= card["oof_ranking"]["hits@10"] <= 1.0
    index = json.loads((folder / "index.json").read_text())
    assert index["node_ids"] == predictor.lg.ids and not set(index["training_folds"]) & HOLDOUT


def test_a_broken_default_predictor_is_a_warning_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, predictor: Predictor, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("KGCODE_HOME", str(tmp_path))
    folder = predictor.save(default_predictor_dir())
    (folder / "model.safetensors").write_bytes(b"garbage")
    assert load_default_predictor(make_world()) is None
    assert any("cannot load the SNOMED CT link predictor" in r.getMessage() for r in caplog.records)


def test_load_default_predictor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, predictor: Predictor,
                                world: KnowledgeGraph) -> None:  # fmt: skip
    monkeypatch.setenv("KGCODE_HOME", str(tmp_path))
    assert load_default_predictor(world) is None
    predictor.save(default_predictor_dir())
    loaded = load_default_predictor(world)
    assert isinstance(loaded, Predictor)
    assert loaded.predict("Q00.9", top_k=1)[0]["target"] == _sctid(0)


def test_threshold_and_calibration_helpers() -> None:
    prob = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5])
    label = np.array([1, 1, 1, 0, 1, 0])
    assert _choose_threshold(prob, label, 0.75) == 0.6  # 4 of 5 at >= 0.6
    assert _choose_threshold(prob, label, 1.0) == 0.8
    assert _choose_threshold(np.array([0.5]), np.array([0]), 0.9) == 1.0
    rng = np.random.default_rng(0)
    score = rng.normal(size=400)
    label = (rng.random(400) < 1 / (1 + np.exp(-2 * score))).astype(float)
    a, b, c = _fit_calibration(score, np.zeros(400), label)
    assert 1.0 < a < 3.5 and abs(c) < 0.5


def test_real_minilm_embeddings(tmp_path: Path) -> None:
    """The real encoder on a handful of texts, through the embedding cache."""
    from text_encoder.hf import HFTextEncoder

    kg = make_world()
    enc = HFTextEncoder(max_length=32)
    ids = ["ICD10CM:Q00.9", "ICD10CM:Q01.9", "DOID:1000", "DOID:1001"]
    vecs = embed_node_texts(kg, ids, enc, tmp_path)
    assert vecs.shape == (4, 384)
    assert torch.allclose(vecs.norm(dim=1), torch.ones(4), atol=1e-4)
    sims = vecs[:2] @ vecs[2:].T
    assert sims[0, 0] > sims[0, 1] and sims[1, 1] > sims[1, 0]  # amber with amber, basil with basil
    owner, names = embed_names(kg, ["DOID:1000", "DOID:1001"], enc, tmp_path)
    assert owner.tolist() == [0, 0, 1, 1]  # label and one synonym each
    again = embed_node_texts(kg, ids, enc, tmp_path)  # from the cache
    assert torch.equal(again, vecs)
    assert len(list(tmp_path.glob("emb-*.safetensors"))) == 3  # ICD10CM, DOID node texts; names


def test_train_linker_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``kgcode train-linker`` trains on every known link and saves where ``kgcode map`` looks."""
    from click.testing import CliRunner

    from kg.store import save_kg
    from kgcode.cli_linker import linker_command

    monkeypatch.setenv("KGCODE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("kgcode.snomed_predictor.default_text_encoder", HashEncoder)
    kg_dir = save_kg(make_world(), tmp_path / "kg")
    result = CliRunner().invoke(linker_command, ["--kg", str(kg_dir), "--gnn-epochs", "3", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "trained the SNOMED CT link predictor on 60 linked codes" in result.output
    loaded = load_default_predictor(make_world())
    assert loaded is not None and loaded.card["holdout_codes"] == 0
    out = tmp_path / "elsewhere"
    cache = tmp_path / "emb"  # --cache-dir: the spelling `kgcode train` uses, same as --embedding-cache
    args = ["--kg", str(kg_dir), "--gnn-epochs", "2", "--out", str(out), "--cache-dir", str(cache)]
    result = CliRunner().invoke(linker_command, args)
    assert result.exit_code == 0 and (out / "model.safetensors").is_file()
    assert any(cache.glob("*.safetensors"))


def test_refit_reranker_for_ablations(world: KnowledgeGraph) -> None:
    p = _train(world, HOLDOUT, seed=1)
    assert p.folds and set(p.folds.values()) == {0, 1}  # training codes keep their fold
    assert not set(p.folds) & HOLDOUT
    p.refit_reranker(drop_features=("gnn", "gnn_rank", "gnn_margin", "lex_exact"))
    assert p.config.drop_features == ("gnn", "gnn_rank", "gnn_margin", "lex_exact")
    assert 0.0 <= p.threshold <= 1.0
    assert p.predict("Q00.9", top_k=1)[0]["target"] == _sctid(0)
    with pytest.raises(ValueError, match="unknown feature"):
        p.refit_reranker(drop_features=("no_such_feature",))


def test_kgcode_map_shows_predicted_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, predictor: Predictor, caplog: pytest.LogCaptureFixture
) -> None:
    """A code with no exact and no inherited link gets ``predicted`` rows from the saved predictor;
    without one, ``kgcode map`` still works and one log line says how to train it."""
    import logging

    from click.testing import CliRunner

    from kg.store import save_kg
    from kgcode.cli_map import map_command

    monkeypatch.setenv("KGCODE_HOME", str(tmp_path / "home"))
    predictor.save(default_predictor_dir())
    # Q03 (held out) and Q03.0 unlinked: nothing exact or inherited is left for Q03.9
    kg_dir = save_kg(make_world(strip=HOLDOUT | {"ICD10CM:Q03.0"}), tmp_path / "kg")
    result = CliRunner().invoke(map_command, ["Q03.9", "--kg", str(kg_dir), "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert rows and {r["kind"] for r in rows} == {"predicted"}
    assert {"target", "kind", "score", "provenance"} <= set(rows[0])
    assert rows[0]["target"] == _sctid(6) and rows[0]["target_title"] == ""  # no SNOMED CT description
    assert rows[0]["provenance"]["via"] in {"DOID:1003", "MONDO:0000003"}
    assert rows[0]["provenance"]["via_label"] in {"delta disease", "delta disorder"}
    table = CliRunner().invoke(map_command, ["Q03.9", "--kg", str(kg_dir)])
    assert "predicted" in table.stdout and "calibrated threshold" in table.stdout
    # a code with exact links keeps them first
    kinds = [
        r["kind"]
        for r in json.loads(CliRunner().invoke(map_command, ["Q00", "--kg", str(kg_dir), "--json"]).stdout)
    ]
    assert kinds[0] == "exact"

    monkeypatch.setenv("KGCODE_HOME", str(tmp_path / "no-model"))
    with caplog.at_level(logging.INFO, logger="kgcode"):
        result = CliRunner().invoke(map_command, ["Q03.9", "--kg", str(kg_dir), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    assert any("kgcode train-linker" in r.getMessage() for r in caplog.records)
