"""Training: the three objectives run, the threshold is tuned on dev only, checkpoints resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from fusion.rerank import FEATURES as RERANK_FEATURES
from fusion.rerank import RELATION_FEATURES
from kgcode.coder import FORMAT_VERSION, Coder, CoderConfig
from kgcode.datasets import Note, read_dataset
from kgcode.training import (
    TrainConfig,
    asymmetric_loss,
    load_config_file,
    prepare_notes,
    train,
)
from tests.fixtures.coder.helpers import (
    DEV,
    TRAIN,
    build_mini_kg,
    tiny_model_config,
    tiny_training_config,
    train_tiny,
)


@pytest.fixture(scope="module")
def kg():  # noqa: ANN201
    return build_mini_kg()


@pytest.fixture(scope="module")
def result(kg, tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN001, ANN201
    return train_tiny(kg, tmp_path_factory.mktemp("emb"))


def test_training_runs_all_objectives_and_reports_dev_metrics(result) -> None:  # noqa: ANN001
    stages = [h["stage"] for h in result.history]
    assert stages == ["align", "notes", "notes"]
    assert all(np.isfinite(h["loss"]) for h in result.history)
    m = result.metrics
    for key in ("map", "micro_precision", "micro_recall", "micro_f1", "macro_f1", "p@8", "r@10"):
        assert 0.0 <= m[key] <= 1.0
    assert set(m["buckets"]) == {"unseen", "1-5", "6-20", ">20"}
    assert m["buckets"]["unseen"]["n"] > 0  # dev has codes never seen in training
    assert m["map"] > 0.3  # the fixture notes name their codes' words
    assert result.coder.card["seed"] == 13 and result.coder.card["threshold_tuned_on"] == "dev"
    assert result.coder.card["dev_metrics_zero_shot_part"]["map"] > 0.0


def test_result_saves_a_loadable_folder_with_a_replayable_config(result, tmp_path: Path) -> None:  # noqa: ANN001
    folder = result.save_to_directory(tmp_path / "coder")
    replay = yaml.safe_load((folder / "train_config.yaml").read_text())
    assert replay["training"]["seed"] == 13 and replay["model"]["encoder"] == "hashing"
    assert replay["results"]["dev"]["map"] == pytest.approx(result.metrics["map"], abs=1e-3)
    again = Coder.load(folder)
    assert again.threshold == pytest.approx(result.coder.threshold)
    card = json.loads((folder / "model_card.json").read_text())
    assert card["training_data"]["train"].endswith("train.jsonl") and card["dev_metrics"]["map"] > 0


def test_threshold_is_tuned_on_dev_notes_only(kg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    import kgcode.metrics as metrics

    seen: list[int] = []
    real = metrics.tune_threshold

    def spy(scores, gold, **kw):  # noqa: ANN001, ANN003, ANN202
        seen.append(np.asarray(scores).shape[0])
        return real(scores, gold, **kw)

    monkeypatch.setattr(metrics, "tune_threshold", spy)
    train_tiny(kg, tmp_path, training=tiny_training_config(epochs=1, pretrain_epochs=0))
    n_dev = len(read_dataset(DEV)[0])
    assert seen and set(seen) == {n_dev}  # never called on the 12 training notes


def test_resume_continues_from_the_last_checkpoint(kg, tmp_path: Path) -> None:  # noqa: ANN001
    ckpt = tmp_path / "ckpt"
    first = train_tiny(kg, tmp_path, training=tiny_training_config(epochs=1), checkpoint_dir=ckpt)
    assert (ckpt / "last.pt").is_file()
    resumed = train_tiny(
        kg, tmp_path, training=tiny_training_config(epochs=2), checkpoint_dir=ckpt, resume=True
    )
    epochs = [(h["stage"], h["epoch"]) for h in resumed.history]
    assert epochs == [("align", 1), ("notes", 1), ("notes", 2)]  # epoch 1 and pre-training not redone
    assert resumed.history[:2] == first.history[:2]
    state = torch.load(ckpt / "last.pt", weights_only=False)
    assert state["epoch"] == 2


def test_resume_refuses_a_checkpoint_of_another_label_set(kg, tmp_path: Path) -> None:  # noqa: ANN001
    ckpt = tmp_path / "ckpt"
    train_tiny(kg, tmp_path, training=tiny_training_config(epochs=1, pretrain_epochs=0), checkpoint_dir=ckpt)
    from kgcode.coder import label_codes

    labels = label_codes(kg)[:-3]
    with pytest.raises(ValueError, match="labels"):
        train_tiny(
            kg,
            tmp_path,
            training=tiny_training_config(epochs=2, pretrain_epochs=0),
            checkpoint_dir=ckpt,
            resume=True,
            labels=labels,
        )


def test_text_only_and_zero_shot_configs_train(kg, tmp_path: Path) -> None:  # noqa: ANN001
    text_only = train_tiny(
        kg, tmp_path, config=tiny_model_config(gnn=None), training=tiny_training_config(epochs=1)
    )
    assert text_only.coder.graph is None and text_only.metrics["map"] > 0
    zs = train_tiny(
        kg,
        tmp_path,
        config=tiny_model_config(fusion="zero_shot", fusion_kwargs={}),
        training=tiny_training_config(epochs=1),
    )
    assert zs.metrics["map"] > 0


def test_prepare_notes_maps_truncated_codes_and_drops_unknown_ones() -> None:
    row = {"ICD10CM:S72.9XXA": 0, "ICD10CM:E11.9": 1}
    notes = [
        Note("a", "Fracture of femur.", ["ICD10CM:S72.9XX", "ICD10CM:E11.9", "ICD9CM:250.00"]),
        Note("b", "   ", ["ICD10CM:E11.9"]),
    ]
    kept, report = prepare_notes(notes, row)
    assert [n.codes for n in kept] == [["ICD10CM:S72.9XXA", "ICD10CM:E11.9"]]
    assert report["notes_skipped"] == 1 and report["codes_mapped"] == 1
    assert report["codes_dropped"] == ["ICD9CM:250.00"]


def test_config_file_round_trip_and_errors(tmp_path: Path) -> None:
    good = tmp_path / "c.yaml"
    good.write_text(
        yaml.safe_dump({"metadata": {"name": "x"}, "model": {"gnn": None}, "training": {"epochs": 3}})
    )
    model, training, meta = load_config_file(good)
    assert model.gnn is None and training.epochs == 3 and meta["name"] == "x"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"training": {"epochz": 3}}))
    with pytest.raises(ValueError, match="epochz"):
        load_config_file(bad)
    bad.write_text("model: [unclosed")
    with pytest.raises(ValueError, match="cannot read config"):
        load_config_file(bad)
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"nope": 1})
    assert CoderConfig.from_dict(model.to_dict()) == model


def test_training_needs_dev_notes(kg, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="no dev notes"):
        train(train_path=TRAIN, kg=kg, config=tiny_model_config(), cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError):
        train(
            train_path=tmp_path / "missing.jsonl",
            dev_path=DEV,
            kg=kg,
            config=tiny_model_config(),
            cache_dir=tmp_path,
        )


def test_asymmetric_loss_prefers_right_answers() -> None:
    targets = torch.tensor([[1.0, 0.0, 0.0]])
    good = asymmetric_loss(torch.tensor([[4.0, -4.0, -4.0]]), targets)
    bad = asymmetric_loss(torch.tensor([[-4.0, 4.0, 4.0]]), targets)
    assert float(good) < float(bad)


@pytest.mark.realdata
@pytest.mark.slow
def test_real_training_with_minilm_on_a_few_codiesp_notes(data_dir: Path, tmp_path: Path) -> None:
    """MiniLM, a real KG slice, 16 CodiEsp notes; the label set restricted to their codes' families."""
    from kg import KnowledgeGraph
    from kgcode.pipeline import build_default_kg

    split = data_dir / "codiesp" / "train"
    notes, _ = read_dataset(split)
    train_notes, dev_notes = notes[:12], notes[12:18]
    full = build_default_kg(None).kg
    gold = {c for n in train_notes + dev_notes for c in n.codes if c in full.graph._node}
    keep = set(gold)
    for c in gold:  # parents and siblings, so there is something to confuse
        for p in full.parents(c):
            keep.add(p)
            keep.update(full.children(p))
    kg = KnowledgeGraph(full.graph.subgraph(keep).copy())
    kg.manifest = full.manifest
    result = train(
        train_notes=train_notes,
        dev_notes=dev_notes,
        kg=kg,
        cache_dir=tmp_path,
        config={"graph_systems": ["ICD10CM"], "inference_dtype": "bf16"},
        training={"epochs": 2, "pretrain_epochs": 1, "batch_size": 4, "n_random": 32},
    )
    assert len(result.coder.labels) < 2_000
    assert result.metrics["map"] > 0.05
    out = result.coder.predict([dev_notes[0].text], top_k=5, threshold=0.0)
    assert len(out[0]) == 5 and out[0][0]["evidence"]


def test_unseen_bias_is_tuned_within_the_tolerances() -> None:
    from kgcode.training import TrainConfig, tradeoff_metrics, tune_unseen_bias

    unseen = torch.tensor([False, False, True, True, True, True])
    # note 0: seen gold ranked first; note 1: its unseen gold (row 2) sits just below two seen codes
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0, -2.0, -3.0], [2.0, 1.8, 1.6, 0.0, -1.0, -2.0]])
    gold = [[0], [2]]
    m0, m1 = tradeoff_metrics(logits, gold, unseen, [0.0, 0.5])
    assert m0["map"] == pytest.approx((1.0 + 1 / 3) / 2) and m0["unseen_r@10"] == 1.0
    assert m1["map"] == pytest.approx(1.0)  # the offset lifts row 2 above the seen codes of note 1
    grid = TrainConfig(unseen_bias_max=1.0, unseen_bias_step=0.5)
    bias, sweep = tune_unseen_bias(logits, gold, unseen, grid)
    assert [s["unseen_bias"] for s in sweep] == [0.0, 0.5, 1.0]
    assert bias in (0.5, 1.0)
    strict = TrainConfig(unseen_bias_max=0.0)
    assert tune_unseen_bias(logits, gold, unseen, strict)[0] == 0.0


def test_training_records_the_unseen_bias_sweep(result) -> None:  # noqa: ANN001
    card = result.coder.card
    assert card["unseen_bias"] == result.coder.config.unseen_bias
    assert card["unseen_bias_sweep"] and "unseen_r@10" in card["unseen_bias_sweep"][0]


def test_fast_map_agrees_with_the_metrics_module() -> None:
    from kgcode.metrics import mean_average_precision
    from kgcode.training import fast_map

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 50, generator=gen)
    gold = [[1, 7], [3], [], [10, 11, 12], [49], [0, 25]]
    dense = np.zeros((6, 50), dtype=bool)
    for i, rows in enumerate(gold):
        dense[i, rows] = True
    assert fast_map(logits, gold) == pytest.approx(mean_average_precision(logits.numpy(), dense))
    assert fast_map(logits, gold, k=5) == pytest.approx(mean_average_precision(logits.numpy(), dense, k=5))


def test_lexicon_weight_and_prior_are_tuned_on_dev(kg, tmp_path: Path) -> None:  # noqa: ANN001
    from kgcode.training import EncodedNotes, lexicon_sweep, tune_lexicon

    cfg = CoderConfig.from_dict(tiny_model_config(rerank_k=4))
    c = Coder.from_kg(cfg, kg).attach(kg, tmp_path / "emb", show_progress_bar=False).finalize()
    notes = ["Fracture of the neck of the left femur, initial encounter.", "Hypoglycemia, unspecified."]
    segs = c.encode_notes(notes)
    gold = [[c.label_row["ICD10CM:S72.002A"]], [c.label_row["ICD10CM:E16.2"]]]
    encoded = EncodedNotes(["a", "b"], gold, segs)
    c.fit_lexicon(segs, gold)
    grid = TrainConfig(lexical_weights=[0.0, 2.0, 20.0], lexical_priors=[0.1, 0.5])
    sweep = lexicon_sweep(c, encoded, grid)
    assert len(sweep) == 6 and all(e["ap"].shape == (2,) for e in sweep)
    assert c.config.lexical_weight == cfg.lexical_weight  # restored after the sweep
    weight, prior, table = tune_lexicon(sweep)
    by = {(m["weight"], m["prior"]): m["map"] for m in table}
    assert by[(20.0, 0.5)] > by[(0.0, 0.1)]  # naming the codes puts them on top, through the candidates
    assert weight > 0 and by[(weight, prior)] == max(by.values())
    # choosing on a subset of notes uses only their average precisions
    flat = [{**e, "ap": torch.tensor([1.0, float("nan")])} for e in sweep]
    assert tune_lexicon(flat, [0])[:2] == (0.0, 0.1)  # all tie: the smallest weight and prior


@pytest.mark.parametrize("rerank_k", [4, 0])  # two stages (the cached first stage) and all labels exact
def test_scoring_inputs_give_the_same_scores_for_every_weight_and_prior(
    kg,  # noqa: ANN001
    tmp_path: Path,
    rerank_k: int,
) -> None:
    from kgcode.training import EncodedNotes, score_encoded, scoring_inputs

    c = Coder.from_kg(CoderConfig.from_dict(tiny_model_config(rerank_k=rerank_k)), kg)
    c.attach(kg, tmp_path / "emb", show_progress_bar=False).finalize()
    notes = [
        "Fracture of the neck of the left femur, initial encounter.",
        "Hypoglycemia, unspecified.",
        "Type 2 diabetes mellitus with hyperglycemia.\nNo fracture.",
    ]
    segs = c.encode_notes(notes)
    gold = [[c.label_row["ICD10CM:S72.002A"]], [c.label_row["ICD10CM:E16.2"]], []]
    encoded = EncodedNotes(["a", "b", "c"], gold, segs)
    c.fit_lexicon(segs, gold)
    inputs = scoring_inputs(c, encoded, batch_size=2)
    assert len(inputs) == 2 and (inputs[0].stage_one is not None) == (rerank_k > 0)
    for weight, prior in ((0.0, 0.1), (2.0, 0.1), (20.0, 0.5)):
        c.config.lexical_weight, c.config.lexical_prior = weight, prior
        plain = score_encoded(c, encoded, batch_size=2)
        cached = score_encoded(c, encoded, batch_size=2, inputs=inputs)
        assert torch.equal(plain, cached)
    assert c.scoring_inputs(segs).coverage.shape == (3, len(c.labels))


def test_training_records_the_dictionary_match(result) -> None:  # noqa: ANN001
    lex = result.coder.card["lexicon"]
    coder = result.coder
    assert lex["tuned_on"] == "dev" and lex["names"] == coder.lexicon.num_names
    assert lex["weight"] == coder.config.lexical_weight and lex["prior"] == coder.config.lexical_prior
    assert lex["training_matches"]["matches"] == int(coder.lexicon_counts[0].sum()) > 0
    assert len(lex["sweep"]) == len(TrainConfig().lexical_weights) * len(TrainConfig().lexical_priors)
    assert {"weight", "prior", "map"} <= set(lex["sweep"][0])


def test_cross_fitted_reranker_is_trained_saved_and_loaded(
    kg,  # noqa: ANN001
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import kgcode.training as training

    calls: list[int] = []
    real = training.candidate_rows

    def spy(coder, encoded, **kw):  # noqa: ANN001, ANN003, ANN202
        calls.append(len(encoded))
        assert coder.reranker is None  # the fold coders score with their own logits
        return real(coder, encoded, **kw)

    monkeypatch.setattr(training, "candidate_rows", spy)
    res = train_tiny(
        kg,
        tmp_path,
        training=tiny_training_config(epochs=1, rerank_folds=3, rerank_trees=10, rerank_min_leaf=2),
    )
    n_train = len(read_dataset(TRAIN)[0])
    assert sorted(calls) == sorted([4, 4, 4]) and sum(calls) == n_train  # every note scored once, held out
    card = res.coder.card["reranker"]
    assert res.coder.reranker is not None and card["trees"] == 10 and len(card["folds"]) == 3
    assert card["positives"] > 0 and card["dev_metrics_without_reranker"]["map"] > 0
    assert res.coder.config.reranked_unseen_bias == card["unseen_bias"]  # tuned on dev after the trees
    assert [e["unseen_bias"] for e in card["unseen_bias_sweep"]][:2] == [0.0, 0.1]
    assert res.metrics["map"] > 0
    folder = res.save_to_directory(tmp_path / "coder")
    config = json.loads((folder / "config.json").read_text())
    assert config["format_version"] == FORMAT_VERSION == 5 and config["reranker"]["trees"] == 10
    # the default trees read the KG's relations; trees without them were scored on dev for the card
    assert config["reranker"]["features"] == list(RERANK_FEATURES + RELATION_FEATURES)
    assert card["relation_features"] is True and card["other_features"]["relation_features"] is False
    assert card["other_features"]["dev_metrics"]["map"] > 0
    assert res.coder.config.reranked_unseen_bias == card["unseen_bias"]  # the kept trees' offset
    again = Coder.load(folder)
    assert again.reranker is not None and again.relations is not None
    assert again.relations.num_labels == len(again.labels)
    notes = [n.text for n in read_dataset(DEV)[0]]
    assert torch.allclose(again.score_texts(notes), res.coder.score_texts(notes), atol=1e-5)
    before = again.score_texts(notes)
    direct, _ = again.score_notes(again.encode_notes(notes))  # outside inference mode: no grad error
    assert torch.allclose(direct, before, atol=1e-5)
    tuned = again.unseen_offset
    assert tuned == card["unseen_bias"]
    # the offset after the trees (the public operating point) moves unseen codes only
    assert again.set_unseen_offset(tuned + 1.0) is again
    assert again.config.reranked_unseen_bias == tuned + 1.0
    assert again.config.unseen_bias == res.coder.config.unseen_bias
    after, unseen = again.score_texts(notes), again.unseen_mask
    assert torch.allclose(after[:, unseen], before[:, unseen] + 1.0, atol=1e-5)
    assert torch.allclose(after[:, ~unseen], before[:, ~unseen])
    again.set_unseen_offset(tuned)
    # the reranker changed the scores of the coder it was fitted for
    res.coder.reranker, saved = None, res.coder.reranker
    assert not torch.allclose(res.coder.score_texts(notes), again.score_texts(notes))
    res.coder.reranker = saved


def test_reranker_without_relation_features_and_with_a_rare_pool(kg, tmp_path: Path) -> None:  # noqa: ANN001
    res = train_tiny(
        kg,
        tmp_path,
        config=tiny_model_config(rerank_relations=False, rerank_rare_candidates=3),
        training=tiny_training_config(
            epochs=1, pretrain_epochs=0, rerank_folds=2, rerank_trees=5, rerank_min_leaf=2
        ),
    )
    card = res.coder.card["reranker"]
    assert res.coder.reranker.features == RERANK_FEATURES and res.coder.relations is None
    assert card["relation_features"] is False and card["other_features"]["relation_features"] is True
    assert card["settings"]["rare_candidates"] == 3  # the rare-code pool is a saved setting
    folder = res.save_to_directory(tmp_path / "coder")
    from safetensors.torch import load_file

    assert not any(k.startswith("relations.") for k in load_file(str(folder / "model.safetensors")))
    again = Coder.load(folder)
    assert again.relations is None and again.reranker_relations is None
    assert again.config.rerank_rare_candidates == 3
    notes = [n.text for n in read_dataset(DEV)[0]]
    assert torch.allclose(again.score_texts(notes), res.coder.score_texts(notes), atol=1e-5)


def test_relation_table_from_the_kg(kg) -> None:  # noqa: ANN001
    from kgcode.training import relation_table

    labels = sorted(
        c for c in kg.graph.nodes if c.startswith("ICD10CM:") and kg.graph.nodes[c].get("kind") != "chapter"
    )
    table = relation_table(kg, labels)
    assert table.num_labels == len(labels)
    # every excludes1 edge between two labels links them
    edges = [
        (u, v) for u, v, k in kg.graph.edges(keys=True) if k == "excludes1" and u in labels and v in labels
    ]
    assert edges
    row = {c: i for i, c in enumerate(labels)}
    for u, v in edges[:5]:
        f = table.features(np.array([row[u], row[v]]), np.array([0.0, 1.0], dtype=np.float32))
        assert f[0, RELATION_FEATURES.index("excludes1_gap")] == 1.0


def test_a_damaged_reranker_names_the_file(kg, tmp_path: Path) -> None:  # noqa: ANN001
    from safetensors.torch import load_file, save_file

    from kgcode.coder import CoderFormatError

    res = train_tiny(
        kg,
        tmp_path,
        training=tiny_training_config(
            epochs=1, pretrain_epochs=0, rerank_folds=2, rerank_trees=5, rerank_min_leaf=2
        ),
    )
    folder = res.save_to_directory(tmp_path / "coder")
    tensors = load_file(str(folder / "model.safetensors"))
    relations = {k: tensors.pop(k) for k in list(tensors) if k.startswith("relations.")}
    assert relations  # the default trees read the KG's relations: their table is in the weights
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(CoderFormatError, match="model.safetensors: the relation table"):
        Coder.load(folder)
    del tensors["reranker.threshold"]
    save_file({**tensors, **relations}, str(folder / "model.safetensors"))
    with pytest.raises(CoderFormatError, match="model.safetensors: the candidate reranker"):
        Coder.load(folder)


def test_rerank_folds_must_be_at_least_two(kg, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="rerank_folds=1"):
        train_tiny(kg, tmp_path, training=tiny_training_config(epochs=1, pretrain_epochs=0, rerank_folds=1))


def prepare_tiny(kg, tmp_path: Path, config: dict) -> object:  # noqa: ANN001
    """:func:`kgcode.training.prepare` of the tiny train / dev notes under ``config``."""
    from kgcode.training import prepare

    return prepare(
        train_path=TRAIN,
        dev_path=DEV,
        kg=kg,
        config=config,
        training=tiny_training_config(),
        cache_dir=tmp_path,
    )


def test_titles_only_config_leaves_the_kg_out_of_the_code_texts(kg, tmp_path: Path) -> None:  # noqa: ANN001
    config = tiny_model_config(gnn=None, code_names="title")
    prepared = prepare_tiny(kg, tmp_path, config)
    assert prepared.code_names == "title"
    assert not any(prepared.neighbours.near) and not any(prepared.neighbours.excludes)
    # guidelines hold the gold codes' texts only (no parents)
    assert [len(g) for g in prepared.guides] == [len(set(gold)) for gold in prepared.enc_train.gold]
    res = train(
        config=config, training=tiny_training_config(epochs=1), prepared=prepared, show_progress_bar=False
    )
    coder = res.coder
    nodes = kg.graph._node
    with_terms = [r for r, c in enumerate(coder.labels) if nodes[c].get("synonyms")]
    assert with_terms  # the fixture has codes with synonyms / inclusion terms
    for r in range(len(coder.labels)):
        assert coder.lexicon.names[r] == [nodes[coder.labels[r]]["title"]]
    r = with_terms[0]
    expected = coder.encoder.encode([nodes[coder.labels[r]]["title"]])[0]
    assert torch.allclose(coder.code_text[r], expected, atol=1e-5)
    # the zero-shot code names are the titles alone too: one name per label, its title's vector
    assert torch.equal(coder.bank["name_owner"], torch.arange(len(coder.labels)))
    assert torch.allclose(coder.bank["names"][r], torch.nn.functional.normalize(expected, dim=-1), atol=1e-5)
    assert res.metrics["map"] > 0
    # the same prepared data cannot train a coder that describes codes by the KG's names
    with pytest.raises(ValueError, match="prepared data describe codes by their 'title' names"):
        train(config=tiny_model_config(gnn=None), training=tiny_training_config(), prepared=prepared)


def test_code_names_are_checked(kg) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match="code_names='synonyms': expected one of kg, title"):
        Coder.from_kg(CoderConfig.from_dict(tiny_model_config(code_names="synonyms")), kg)
    with pytest.raises(ValueError, match="it needs gnn: null"):
        Coder.from_kg(CoderConfig.from_dict(tiny_model_config(code_names="title")), kg)


def test_prepared_code_names_follow_the_config(kg, tmp_path: Path) -> None:  # noqa: ANN001
    config = tiny_model_config(gnn=None, zero_shot_names=False)
    prepared = prepare_tiny(kg, tmp_path, config)
    assert prepared.names is None
    plain = train(
        config=config, training=tiny_training_config(epochs=1, rerank_folds=2), prepared=prepared
    ).coder
    assert "names" not in plain.bank and not Coder.load(plain.save(tmp_path / "plain")).config.zero_shot_names
    with pytest.raises(ValueError, match="prepared data have no code names"):
        train(config=tiny_model_config(gnn=None), training=tiny_training_config(), prepared=prepared)
    named = prepare_tiny(kg, tmp_path, tiny_model_config(gnn=None))
    assert named.names is not None and len(named.names[1]) > len(named.labels)
    # the reranker's fold coders read the names too: the trained coder's bank holds them
    coder = train(
        config=tiny_model_config(gnn=None),
        training=tiny_training_config(epochs=1, rerank_folds=2),
        prepared=named,
    ).coder
    assert torch.equal(coder.bank["name_owner"], named.names[1])
