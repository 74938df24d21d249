"""The stacked candidate reranker: flat trees, features, reranked logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion.rerank import FEATURES, LabelTable, TreeEnsemble, candidate_features, rerank_logits

LABELS = [
    "ICD10CM:E11",
    "ICD10CM:E11.9",
    "ICD10CM:E11.65",
    "ICD10CM:I10",
    "ICD10CM:J18",
    "ICD10CM:J18.9",
]
TITLES = [
    "Type 2 diabetes mellitus",
    "Type 2 diabetes mellitus without complications",
    "Type 2 diabetes mellitus with hyperglycemia",
    "Essential (primary) hypertension",
    "Pneumonia, unspecified organism",
    "Pneumonia, unspecified organism",
]
COUNTS = [0, 5, 0, 7, 0, 2]


@pytest.fixture(scope="module")
def table() -> LabelTable:
    return LabelTable.build(LABELS, TITLES, COUNTS)


def _fitted(n: int = 2000, seed: int = 0) -> tuple[TreeEnsemble, object, np.ndarray]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(FEATURES)))
    y = x[:, 0] + x[:, 1] * x[:, 2] + 0.5 * rng.normal(size=n) > 0
    clf = HistGradientBoostingClassifier(max_iter=30, max_leaf_nodes=7, early_stopping=False, random_state=0)
    clf.fit(x, y)
    return TreeEnsemble.from_sklearn(clf), clf, x


def test_flat_trees_reproduce_the_fitted_booster() -> None:
    trees, clf, x = _fitted()
    assert trees.num_trees == 30
    np.testing.assert_allclose(trees.decision_function(x), clf.decision_function(x), atol=1e-9)
    np.testing.assert_allclose(trees.probability(x), clf.predict_proba(x)[:, 1], atol=1e-9)


def test_trees_round_trip_through_tensors() -> None:
    trees, clf, x = _fitted()
    state = trees.state_dict("r.")
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    again = TreeEnsemble.from_state_dict(state, FEATURES, "r.")
    np.testing.assert_allclose(again.decision_function(x), clf.decision_function(x), atol=1e-9)


def test_damaged_trees_are_refused() -> None:
    trees, _, _ = _fitted()
    state = trees.state_dict()
    state["reranker.left"] = state["reranker.left"] + 10_000
    with pytest.raises(ValueError, match="outside"):
        TreeEnsemble.from_state_dict(state, FEATURES)
    del state["reranker.value"]
    with pytest.raises(KeyError):
        TreeEnsemble.from_state_dict(state, FEATURES)


def test_wrong_feature_count_is_refused() -> None:
    trees, _, _ = _fitted()
    with pytest.raises(ValueError, match=f"rows of {len(FEATURES)} features"):
        trees.decision_function(np.zeros((3, 4)))


def test_fit_learns_and_needs_both_classes() -> None:
    x = np.tile(np.arange(4, dtype=np.float32)[:, None], (50, len(FEATURES)))
    y = x[:, 0] > 1.5
    trees = TreeEnsemble.fit(x, y, max_iter=20, min_samples_leaf=5)
    scores = trees.decision_function(np.array([[0.0] * len(FEATURES), [3.0] * len(FEATURES)]))
    assert scores[1] > scores[0] + 1.0
    with pytest.raises(ValueError, match="positive and negative"):
        TreeEnsemble.fit(x, np.zeros(len(x), dtype=bool))


def test_label_table(table: LabelTable) -> None:
    assert table.num_categories == 3  # E11, I10, J18
    assert table.category[0] == table.category[1] == table.category[2]
    assert table.seen.tolist() == [False, True, False, True, False, True]
    assert table.unspecified.tolist() == [False, False, False, False, True, True]
    assert table.code_length.tolist() == [3.0, 4.0, 5.0, 3.0, 3.0, 4.0]
    # the category's training notes are its codes' summed
    assert float(table.log_category_train_notes[table.category[1]]) == pytest.approx(np.log1p(5))


def test_candidates_add_unseen_codes_and_describe_them(table: LabelTable) -> None:
    logits = torch.tensor([[0.0, 3.0, -1.0, 2.0, -2.0, -3.0]])
    zs = torch.tensor([[0.1, 0.5, 0.9, 0.2, 0.3, 0.1]])
    cov = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.8, 0.0]])
    rel = torch.full((6,), 0.5)
    ((rows, feats),) = candidate_features(logits, zs, cov, rel, table, top_k=2, unseen_k=1)
    # top 2 by score (E11.9, I10), the best unseen by cosine (E11.65), the best unseen by coverage (J18)
    assert sorted(rows.tolist()) == [1, 2, 3, 4]
    assert feats.shape == (4, len(FEATURES))
    col = {name: feats[:, j] for j, name in enumerate(FEATURES)}
    where = {r: k for k, r in enumerate(rows.tolist())}
    e1165 = where[2]
    assert col["seen"][e1165] == 0.0 and col["from_top_logits"][e1165] == 0.0
    assert col["zero_shot"][e1165] == pytest.approx(0.9)
    assert col["zero_shot_minus_category_max"][e1165] == pytest.approx(0.0)  # best of E11.*
    assert col["category_max_logit"][e1165] == pytest.approx(3.0)  # E11.9
    assert col["logit_minus_top1"][where[1]] == pytest.approx(0.0)
    assert col["lexical"][where[4]] == pytest.approx(0.4)
    assert col["unspecified"][where[4]] == 1.0


def test_rerank_puts_candidates_first_and_keeps_the_rest_in_order(table: LabelTable) -> None:
    trees, _, _ = _fitted()
    logits = torch.tensor([[0.0, 3.0, -1.0, 2.0, -2.0, -3.0]])
    zs = torch.zeros(1, 6)
    cands = candidate_features(logits, zs, torch.zeros(1, 6), torch.zeros(6), table, top_k=2, unseen_k=0)
    out = rerank_logits(logits, cands, trees)
    rows = cands[0][0]
    expected = torch.from_numpy(trees.decision_function(cands[0][1])).float()
    assert torch.allclose(out[0, rows], expected)
    rest = [j for j in range(6) if j not in rows.tolist()]
    assert float(out[0, rest].max()) < float(out[0, rows].min())
    order = sorted(rest, key=lambda j: -float(logits[0, j]))
    assert sorted(rest, key=lambda j: -float(out[0, j])) == order


def test_a_batch_of_notes_gets_each_notes_own_tree_scores(table: LabelTable) -> None:
    trees, _, _ = _fitted()
    # labels 2 and 4 are unseen: the first note's two signals pick the same one, the second's differ
    logits = torch.tensor([[0.5, 3.0, -4.0, 2.0, -5.0, 0.4], [1.0, 2.5, -3.0, 0.2, -1.0, 2.0]])
    zs = torch.tensor([[0.0, 0.1, 0.9, 0.0, 0.2, 0.0], [0.3, 0.0, 0.8, 0.1, 0.0, 0.0]])
    cov = torch.tensor([[0.0, 0.0, 0.9, 0.0, 0.1, 0.0], [0.0, 0.0, 0.0, 0.0, 0.7, 0.0]])
    cands = candidate_features(logits, zs, cov, torch.full((6,), 0.5), table, top_k=2, unseen_k=1)
    assert len({len(rows) for rows, _ in cands}) > 1  # notes with different candidate counts
    out = rerank_logits(logits, cands, trees)
    for i, (rows, feats) in enumerate(cands):  # the same as reranking each note alone
        alone = rerank_logits(logits[i : i + 1], [(rows, feats)], trees)
        assert torch.equal(out[i], alone[0])
        assert torch.allclose(out[i, rows], torch.from_numpy(trees.decision_function(feats)).float())


def test_labels_outside_the_candidates_never_tie(table: LabelTable) -> None:
    trees, _, _ = _fitted()
    # E11.65 and J18 are unseen candidates with low scores; the others above them must keep their gaps
    logits = torch.tensor([[0.5, 3.0, -4.0, 2.0, -5.0, 0.4]])
    zs = torch.tensor([[0.0, 0.0, 0.9, 0.0, 0.0, 0.0]])
    cov = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.9, 0.0]])
    cands = candidate_features(logits, zs, cov, torch.zeros(6), table, top_k=2, unseen_k=1)
    out = rerank_logits(logits, cands, trees)
    assert sorted(cands[0][0].tolist()) == [1, 2, 3, 4]
    assert float(out[0, 0] - out[0, 5]) == pytest.approx(0.1, abs=1e-5)  # E11 above J18.9, same gap
