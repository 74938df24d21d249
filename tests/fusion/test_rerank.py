"""The stacked candidate reranker: flat trees, features, reranked logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fusion.rerank import (
    FEATURES,
    NO_LINK,
    RELATION_FEATURES,
    RELATION_GROUPS,
    LabelTable,
    RelationTable,
    TreeEnsemble,
    candidate_features,
    rerank_logits,
)

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


def test_trees_pointing_back_are_refused() -> None:
    trees, _, _ = _fitted()
    state = trees.state_dict()
    inner = int(np.flatnonzero(state["reranker.left"].numpy() >= 0)[1])
    state["reranker.right"][inner] = int(state["reranker.roots"][0])  # back to the first root
    with pytest.raises(ValueError, match="cycle"):
        TreeEnsemble.from_state_dict(state, FEATURES)


def test_missing_values_follow_the_booster() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(1)
    x = rng.normal(size=(1500, len(FEATURES)))
    x[rng.random(x.shape) < 0.2] = np.nan  # missing in training: each split learns a side for NaN
    y = np.nan_to_num(x[:, 0]) + np.nan_to_num(x[:, 3]) > 0
    clf = HistGradientBoostingClassifier(max_iter=25, max_leaf_nodes=9, early_stopping=False, random_state=0)
    clf.fit(x, y)
    trees = TreeEnsemble.from_sklearn(clf)
    assert trees.missing_left.any() and not trees.missing_left.all()
    test = rng.normal(size=(400, len(FEATURES)))
    test[rng.random(test.shape) < 0.3] = np.nan
    np.testing.assert_allclose(trees.decision_function(test), clf.decision_function(test), atol=1e-9)


def _walk_one_by_one(trees: TreeEnsemble, row: np.ndarray) -> float:
    total = trees.baseline
    for node in trees.roots.tolist():
        while trees.left[node] >= 0:
            v = row[trees.feature[node]]
            go_left = bool(trees.missing_left[node]) if np.isnan(v) else v <= trees.threshold[node]
            node = int(trees.left[node] if go_left else trees.right[node])
        total += trees.value[node]
    return total


def test_batched_walk_equals_walking_each_row_and_tree() -> None:
    trees, _, x = _fitted(n=300, seed=3)
    x = x.copy()
    x[::7, 2] = np.nan
    expected = np.array([_walk_one_by_one(trees, r) for r in x])
    np.testing.assert_allclose(trees.decision_function(x), expected, rtol=0, atol=1e-12)
    assert trees.decision_function(x[:0]).shape == (0,)
    leaf = -np.ones(1)
    zero = np.zeros(1)
    stump = TreeEnsemble(zero, zero, leaf, leaf, np.array([0.25]), np.zeros(1, bool), zero, 0.5)
    np.testing.assert_allclose(stump.decision_function(np.zeros((3, len(FEATURES)))), [0.75] * 3)


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


# --------------------------------------------------------------------------- relation features

PARENTS = {
    "ICD10CM:E11.9": ["ICD10CM:E11"],
    "ICD10CM:E11.65": ["ICD10CM:E11"],
    "ICD10CM:E11": ["ICD10CM:E08-E13"],
    "ICD10CM:J18.9": ["ICD10CM:J18"],
    "ICD10CM:J18": ["ICD10CM:J09-J18"],
    "ICD10CM:I10": ["ICD10CM:I10-I1A"],
}
NOTES = {
    # a note on the block holds for every code below it, and names J18 with everything below it
    "excludes1": {"ICD10CM:E08-E13": ["ICD10CM:J18"], "ICD10CM:X99": ["ICD10CM:E11"]},
    "excludes2": {"ICD10CM:I10": ["ICD10CM:E11.65"]},
    "co_coding": {"ICD10CM:E11.65": ["ICD10CM:I10", "ICD10CM:Z79.4"]},
}
GEM = {"ICD10CM:E11": ["ICD9CM:250.00"], "ICD10CM:E11.9": ["ICD9CM:250.00", "ICD9CM:250.02"]}
XREFS = {"ICD10CM:E11.9": 2, "ICD10CM:I10": 1}


@pytest.fixture(scope="module")
def relations() -> RelationTable:
    return RelationTable.build(LABELS, PARENTS, NOTES, GEM, XREFS)


def test_relation_features_follow_inherited_links_both_ways(relations: RelationTable) -> None:
    rows = np.array([1, 2, 3, 5])  # E11.9, E11.65, I10, J18.9
    score = np.array([2.0, -1.0, 0.5, 1.0], dtype=np.float32)
    f = relations.features(rows, score)
    assert f.shape == (4, len(RELATION_FEATURES))
    col = {name: f[:, j] for j, name in enumerate(RELATION_FEATURES)}
    # Excludes1 on the diabetes block names J18, so J18.9 conflicts with E11.9 and E11.65
    assert col["excludes1_gap"].tolist() == pytest.approx([1.0 - 2.0, 1.0 + 1.0, NO_LINK, 2.0 - 1.0])
    # Excludes2 of I10 names E11.65; code-also / use-additional of E11.65 names I10: both ways
    assert col["excludes2_gap"].tolist() == pytest.approx([NO_LINK, 0.5 + 1.0, -1.0 - 0.5, NO_LINK])
    assert col["co_coding_gap"].tolist() == pytest.approx([NO_LINK, 1.5, -1.5, NO_LINK])
    # E11 shares ICD-9 250.00 with E11.9 but is not a candidate here
    assert (col["gem_group_gap"] == NO_LINK).all()
    assert col["log_xrefs"].tolist() == pytest.approx(np.log1p([2, 0, 1, 0]).tolist())
    assert col["log_gem_links"].tolist() == pytest.approx(np.log1p([2, 0, 0, 0]).tolist())
    both = relations.features(np.array([0, 1]), np.array([0.0, 3.0], dtype=np.float32))
    assert both[:, RELATION_FEATURES.index("gem_group_gap")].tolist() == [3.0, -3.0]


def test_relation_features_match_a_pair_by_pair_reading_of_the_links() -> None:
    """The vectorised joins give what the definition says, pair by pair, on a random hierarchy."""
    rng = np.random.default_rng(3)
    labels = [f"ICD10CM:C{i:02d}" for i in range(40)]
    nodes = labels + [f"ICD10CM:B{i}" for i in range(6)]  # blocks above the labels
    # each label's parent is an earlier label or a block (acyclic)
    parents = {c: [str(rng.choice(nodes[: labels.index(c)] + nodes[40:]))] for c in labels}
    notes = {
        g: {str(rng.choice(nodes)): [str(t) for t in rng.choice(nodes, 2)] for _ in range(12)}
        for g in RELATION_GROUPS
    }
    gem = {c: [f"ICD9CM:{int(x)}" for x in rng.integers(0, 8, rng.integers(0, 3))] for c in labels}
    table = RelationTable.build(labels, parents, notes, gem, {})

    def up(c: str) -> set[str]:
        return {c}.union(*(up(p) for p in parents.get(c, [])))

    def named(c: str, group: str) -> set[str]:
        return {t for a in up(c) for t in notes[group].get(a, [])}

    for trial in range(5):
        rows = rng.choice(len(labels), 15, replace=False)
        score = rng.normal(size=15).astype(np.float32)
        got = table.features(rows, score)
        want = np.full_like(got, NO_LINK)
        for i, ri in enumerate(rows):
            for j, rj in enumerate(rows):
                if i == j:
                    continue
                a, b = labels[ri], labels[rj]
                links = [bool(named(a, g) & up(b)) or bool(named(b, g) & up(a)) for g in RELATION_GROUPS]
                links.append(bool(set(gem[a]) & set(gem[b])))
                for col, linked in enumerate(links):
                    if linked:
                        want[i, col] = max(want[i, col], score[j] - score[i])
        want[:, -2:] = got[:, -2:]
        assert np.array_equal(got, want), trial


def test_relation_table_round_trips_and_refuses_damage(relations: RelationTable) -> None:
    state = relations.state_dict("rel.")
    assert all(
        isinstance(v, torch.Tensor) and not v.is_floating_point() or k.endswith("xrefs")
        for k, v in state.items()
    )
    again = RelationTable.from_state_dict(state, len(LABELS), "rel.")
    rows, score = np.array([1, 2, 3, 5]), np.array([2.0, -1.0, 0.5, 1.0], dtype=np.float32)
    np.testing.assert_array_equal(again.features(rows, score), relations.features(rows, score))
    bad = dict(state)
    bad["rel.excludes1_idx"] = bad["rel.excludes1_idx"] + 10_000
    with pytest.raises(ValueError, match="outside"):
        RelationTable.from_state_dict(bad, len(LABELS), "rel.")
    with pytest.raises(ValueError, match="number of labels"):
        RelationTable.from_state_dict(state, len(LABELS) + 1, "rel.")
    del bad["rel.gem_ptr"]
    with pytest.raises(KeyError):
        RelationTable.from_state_dict(bad, len(LABELS), "rel.")


def test_candidates_with_relations_append_the_relation_columns(
    table: LabelTable, relations: RelationTable
) -> None:
    logits = torch.tensor([[0.0, 3.0, -1.0, 2.0, -2.0, 1.0]])
    zs, cov, rel = torch.zeros(1, 6), torch.zeros(1, 6), torch.zeros(6)
    ((rows, plain),) = candidate_features(logits, zs, cov, rel, table, top_k=4, unseen_k=0)
    ((rows2, feats),) = candidate_features(
        logits, zs, cov, rel, table, top_k=4, unseen_k=0, relations=relations
    )
    assert torch.equal(rows, rows2) and feats.shape == (len(rows), len(FEATURES) + len(RELATION_FEATURES))
    np.testing.assert_array_equal(feats[:, : len(FEATURES)], plain)
    np.testing.assert_array_equal(
        feats[:, len(FEATURES) :], relations.features(rows.numpy(), logits[0, rows].numpy())
    )


def test_a_batch_of_notes_gets_the_candidates_and_features_of_each_note_alone(
    table: LabelTable, relations: RelationTable
) -> None:
    logits = torch.tensor([[0.5, 3.0, -4.0, 2.0, -5.0, 0.4], [1.0, 2.5, -3.0, 0.2, -1.0, 2.0], [0.0] * 6])
    zs = torch.tensor([[0.0, 0.1, 0.9, 0.0, 0.2, 0.0], [0.3, 0.0, 0.8, 0.1, 0.0, 0.0], [0.0] * 6])
    cov = torch.tensor([[0.0, 0.0, 0.9, 0.0, 0.1, 0.0], [0.0, 0.0, 0.0, 0.0, 0.7, 0.0], [0.0] * 6])
    rel = torch.full((6,), 0.5)
    kwargs = {"top_k": 3, "unseen_k": 1, "relations": relations}
    batch = candidate_features(logits, zs, cov, rel, table, **kwargs)
    assert len(batch) == 3 and len({len(rows) for rows, _ in batch}) > 1
    for i, (rows, feats) in enumerate(batch):
        ((alone_rows, alone),) = candidate_features(
            logits[i : i + 1], zs[i : i + 1], cov[i : i + 1], rel, table, **kwargs
        )
        assert torch.equal(rows, alone_rows) and rows.tolist() == sorted(set(rows.tolist()))
        np.testing.assert_array_equal(feats, alone)  # no feature leaks from another note


def test_the_rare_pool_adds_the_best_codes_with_few_training_notes(table: LabelTable) -> None:
    # I10 (7 notes) leads; E11.9 (5 notes) and J18.9 (2 notes) are the rare codes
    logits = torch.tensor([[0.0, 2.0, -1.0, 3.0, -2.0, -3.0]])
    zs, cov, rel = torch.zeros(1, 6), torch.zeros(1, 6), torch.zeros(6)

    def rows(**kwargs: int) -> list[int]:
        ((r, feats),) = candidate_features(logits, zs, cov, rel, table, top_k=1, unseen_k=0, **kwargs)
        assert feats.shape == (len(r), len(FEATURES))
        return sorted(r.tolist())

    assert rows() == [3]  # no rare pool by default
    assert rows(rare_k=1) == [1, 3]  # the best rare code by score, E11.9
    assert rows(rare_k=5) == [1, 3, 5]  # at most the rare codes there are; never I10 twice
    assert rows(rare_k=1, rare_max_notes=2) == [3, 5]  # E11.9 has too many notes: J18.9
    assert rows(rare_k=1, rare_max_notes=0) == [3]  # an empty pool
