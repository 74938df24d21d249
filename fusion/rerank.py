"""Stacked candidate reranker: boosted trees over code-agnostic features of each note's candidates.

The coder's score ranks every label; this last stage re-orders each note's candidates (its best
codes by that score, plus the codes without training notes that the zero-shot cosine and the
dictionary match rank highest) with gradient-boosted trees. The features describe a candidate
without naming it (its score, its zero-shot cosine and dictionary coverage, how many training
notes it and its category have, how it compares with the rest of its category, whether it is an
"unspecified" code, ...), so the trees learn how far to trust each signal for frequent, rare and
unseen codes. They are trained by :func:`kgcode.training.train` on training notes scored by coders
that never saw them (cross-fitting), so the features look at training time as they do at prediction
time, and their output is a calibrated log-odds.

The trees are plain arrays (:class:`TreeEnsemble`), saved in ``model.safetensors`` like every
other weight: no pickle, and prediction needs only numpy. scikit-learn fits them
(:meth:`TreeEnsemble.fit`, imported only then).

Example:
    >>> import numpy as np
    >>> x = np.array([[0.0], [1.0], [2.0], [3.0]] * 50, dtype=np.float32)
    >>> y = (x[:, 0] > 1.5)
    >>> trees = TreeEnsemble.fit(x, y, max_iter=20, min_samples_leaf=5)
    >>> bool(trees.decision_function(np.array([[3.0]]))[0] > trees.decision_function(np.array([[0.0]]))[0])
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "FEATURES",
    "RELATION_FEATURES",
    "RELATION_GROUPS",
    "LabelTable",
    "RelationTable",
    "TreeEnsemble",
    "candidate_features",
    "rerank_logits",
]

#: The features of a (note, candidate code) pair, in column order.
FEATURES: tuple[str, ...] = (
    "logit",  # the coder's score (head + memory + dictionary + unseen offset)
    "logit_minus_top1",  # ... minus the note's best score
    "logit_minus_top10",  # ... minus the note's 10th best score
    "zero_shot",  # best cosine between a sentence and the code text
    "zero_shot_minus_max",  # ... minus the note's best cosine over all codes
    "coverage",  # dictionary coverage of the code's best name in one sentence (0: no match)
    "reliability",  # how often the code's matches were gold in the training notes (smoothed)
    "lexical",  # coverage x reliability
    "log_train_notes",  # log(1 + training notes of the code)
    "seen",  # the code has training notes
    "log_category_train_notes",  # log(1 + training notes of its category, all codes summed)
    "category_max_logit",  # best score in the code's category (3-character code)
    "logit_minus_category_max",
    "zero_shot_minus_category_max",
    "unspecified",  # the title says "unspecified"
    "code_length",  # characters of the code without the dot (3 = category)
    "category_max_coverage",
    "from_top_logits",  # the candidate came from the coder's own top list
)

#: Knowledge-graph relations the relation features follow, by group (an edge of any relation of a
#: group links two codes; notes on a category or block hold for every code below it).
RELATION_GROUPS: dict[str, tuple[str, ...]] = {
    "excludes1": ("excludes1",),
    "excludes2": ("excludes2",),
    "co_coding": ("code_first", "use_additional", "code_also"),
}

#: The features a :class:`RelationTable` adds after :data:`FEATURES` (a coder trained with
#: ``rerank_relations``). A "gap" is the best score among the note's other candidates linked to
#: this one, minus its own score (:data:`NO_LINK` when none is linked).
RELATION_FEATURES: tuple[str, ...] = (
    "excludes1_gap",  # an Excludes1 note links the two codes (either way): "not coded here"
    "excludes2_gap",  # an Excludes2 note: "not included here", both may be coded
    "co_coding_gap",  # a code-first / use-additional / code-also note
    "gem_group_gap",  # the two codes share an ICD-9-CM code in the CMS GEMs
    "log_xrefs",  # log(1 + Disease Ontology and Mondo concepts that cross-reference the code)
    "log_gem_links",  # log(1 + ICD-9-CM codes the GEMs map the code to or from)
)

#: The value of a gap feature when no other candidate is linked.
NO_LINK = -30.0


@dataclass
class LabelTable:
    """Per-label constants the features need.

    Attributes:
        category: category index of each label (the code before the dot).
        num_categories: number of categories.
        log_train_notes: ``log(1 + training notes)`` of each label.
        seen: labels with training notes.
        log_category_train_notes: ``log(1 + training notes)`` of each category (codes summed).
        unspecified: labels whose title says "unspecified".
        code_length: characters of each code without system and dot.

    Shapes:
        every per-label tensor: ``(num_labels,)``; log_category_train_notes: ``(num_categories,)``.
    """

    category: Tensor
    num_categories: int
    log_train_notes: Tensor
    seen: Tensor
    log_category_train_notes: Tensor
    unspecified: Tensor
    code_length: Tensor

    @classmethod
    def build(cls, labels: Sequence[str], titles: Sequence[str], train_counts: Sequence[int]) -> LabelTable:
        """The table of a label set.

        Args:
            labels: system-qualified codes (``ICD10CM:E11.9``).
            titles: their titles (``""`` where unknown).
            train_counts: training notes of each label.
        """
        ids: dict[str, int] = {}
        category = torch.tensor([ids.setdefault(c.split(".")[0], len(ids)) for c in labels], dtype=torch.long)
        counts = torch.tensor([float(c) for c in train_counts])
        cat_counts = torch.zeros(len(ids)).index_add_(0, category, counts)
        return cls(
            category=category,
            num_categories=len(ids),
            log_train_notes=torch.log1p(counts),
            seen=counts > 0,
            log_category_train_notes=torch.log1p(cat_counts),
            unspecified=torch.tensor(["unspecified" in (t or "").lower() for t in titles]),
            code_length=torch.tensor([float(len(c.partition(":")[2].replace(".", ""))) for c in labels]),
        )


def _csr(lists: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Lists of ints as ``(ptr, idx)``: list ``i`` is ``idx[ptr[i]:ptr[i + 1]]``."""
    ptr = np.zeros(len(lists) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(x) for x in lists])
    idx = np.fromiter((v for x in lists for v in x), dtype=np.int64, count=int(ptr[-1]))
    return ptr, idx


class RelationTable:
    """What the relation features read from the knowledge graph, as plain integer arrays.

    Nodes are the labels (rows ``0 .. num_labels - 1``) followed by the other nodes of the label
    system's hierarchy (blocks, chapters). Two labels are linked by a group of
    :data:`RELATION_GROUPS` when a note of that group on one of them or on one of its ancestors
    names the other or one of its ancestors. Built by the coder's training from the KG
    (:func:`kgcode.training.relation_table`) and saved in ``model.safetensors``; prediction needs
    only these arrays, not the KG.

    Args:
        num_labels: how many labels.
        ancestors: ``(ptr, idx)`` per label: its ancestor-or-self nodes.
        targets: per group name, ``(ptr, idx)`` per node: the nodes its notes of that group name.
        gem: ``(ptr, idx)`` per label: ids of the ICD-9-CM codes the GEMs link it to.
        xrefs: per label, how many DO / Mondo concepts cross-reference it.

    Shapes:
        ancestors ptr: ``(num_labels + 1,)``; targets ptr: ``(num_nodes + 1,)``; xrefs: ``(num_labels,)``.
    """

    def __init__(
        self,
        num_labels: int,
        ancestors: tuple[np.ndarray, np.ndarray],
        targets: Mapping[str, tuple[np.ndarray, np.ndarray]],
        gem: tuple[np.ndarray, np.ndarray],
        xrefs: np.ndarray,
    ) -> None:
        self.num_labels = int(num_labels)
        self.ancestors = tuple(np.asarray(a, dtype=np.int64) for a in ancestors)
        if set(targets) != set(RELATION_GROUPS):
            raise ValueError(f"relation targets for {sorted(targets)}, expected {sorted(RELATION_GROUPS)}")
        self.targets = {g: tuple(np.asarray(a, dtype=np.int64) for a in targets[g]) for g in RELATION_GROUPS}
        self.gem = tuple(np.asarray(a, dtype=np.int64) for a in gem)
        self.xrefs = np.asarray(xrefs, dtype=np.float32)
        if len(self.ancestors[0]) != self.num_labels + 1 or len(self.gem[0]) != self.num_labels + 1:
            raise ValueError("relation table: per-label arrays do not match the number of labels")
        if len(self.xrefs) != self.num_labels:
            raise ValueError("relation table: xrefs do not match the number of labels")
        self.num_nodes = len(next(iter(self.targets.values()))[0]) - 1
        for ptr, idx in (self.ancestors, *self.targets.values()):
            outside = len(idx) and (idx.min() < 0 or idx.max() >= self.num_nodes)
            if len(ptr) < 1 or ptr[-1] != len(idx) or outside:
                raise ValueError("relation table: node ids outside the table")
        if any(len(ptr) != self.num_nodes + 1 for ptr, _ in self.targets.values()):
            raise ValueError("relation table: target groups of different sizes")
        self.log_xrefs = np.log1p(self.xrefs)
        self.log_gem_links = np.log1p(np.diff(self.gem[0]).astype(np.float32))

    @classmethod
    def build(
        cls,
        labels: Sequence[str],
        parents: Mapping[str, Sequence[str]],
        notes: Mapping[str, Mapping[str, Sequence[str]]],
        gem: Mapping[str, Sequence[str]],
        xrefs: Mapping[str, int],
    ) -> RelationTable:
        """The table of a label set from plain mappings (the KG walk is the caller's).

        Args:
            labels: the label ids, in row order.
            parents: node id -> its parents in the hierarchy (labels and the nodes above them).
            notes: group name of :data:`RELATION_GROUPS` -> node id -> the node ids its notes name.
            gem: label id -> the ICD-9-CM ids the GEMs link it to.
            xrefs: label id -> how many DO / Mondo concepts cross-reference it.
        """
        node = {c: i for i, c in enumerate(labels)}

        def nid(c: str) -> int:
            return node.setdefault(c, len(node))

        anc_lists: list[list[int]] = []
        memo: dict[str, set[int]] = {}

        def up(c: str, seen: frozenset[str] = frozenset()) -> set[int]:
            if c in memo:
                return memo[c]
            out = {nid(c)}
            for p in parents.get(c, ()):
                if p not in seen:
                    out |= up(p, seen | {c})
            memo[c] = out
            return out

        for c in labels:
            anc_lists.append(sorted(up(c)))
        # notes on nodes outside the labels' ancestry, or naming such nodes, can link no label
        per_group: dict[str, list[list[int]]] = {}
        for group in RELATION_GROUPS:
            lists: list[list[int]] = [[] for _ in range(len(node))]
            for src, dsts in notes.get(group, {}).items():
                if src in node:
                    lists[node[src]] = sorted({node[d] for d in dsts if d in node})
            per_group[group] = lists
        icd9: dict[str, int] = {}
        gem_lists = [sorted({icd9.setdefault(t, len(icd9)) for t in gem.get(c, ())}) for c in labels]
        return cls(
            len(labels),
            _csr(anc_lists),
            {g: _csr(v) for g, v in per_group.items()},
            _csr(gem_lists),
            np.array([float(xrefs.get(c, 0)) for c in labels], dtype=np.float32),
        )

    @staticmethod
    def _ranges(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``starts[a], starts[a] + 1, ..., starts[a] + counts[a] - 1`` for every ``a``, with ``a``."""
        owner = np.repeat(np.arange(len(starts)), counts)
        offset = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        return owner, np.repeat(starts, counts) + offset

    @classmethod
    def _expand(cls, ptr: np.ndarray, idx: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The CSR lists of ``keys``, flattened: ``(position in keys, list item)`` pairs."""
        owner, at = cls._ranges(ptr[keys], ptr[keys + 1] - ptr[keys])
        return owner, idx[at]

    @classmethod
    def _join(
        cls, left_key: np.ndarray, left: np.ndarray, right_key: np.ndarray, right: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(left[a], right[b])`` for every ``a``, ``b`` with ``left_key[a] == right_key[b]``.

        ``right_key`` must be sorted.
        """
        lo = np.searchsorted(right_key, left_key, side="left")
        a, at = cls._ranges(lo, np.searchsorted(right_key, left_key, side="right") - lo)
        return left[a], right[at]

    def features(self, rows: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """:data:`RELATION_FEATURES` of one note's candidates.

        Args:
            rows: the candidates' label rows.
            logits: their scores.

        Returns:
            One row of features per candidate.

        Shapes:
            rows, logits: ``(k,)``; output: ``(k, len(RELATION_FEATURES))`` float32.
        """
        rows = np.asarray(rows, dtype=np.int64)
        score = np.asarray(logits, dtype=np.float32)
        k = len(rows)
        out = np.full((k, len(RELATION_FEATURES)), NO_LINK, dtype=np.float32)

        def gaps(col: int, i: np.ndarray, j: np.ndarray) -> None:
            keep = i != j
            np.maximum.at(out[:, col], i[keep], score[j[keep]] - score[i[keep]])

        # (candidate, node at or above it): a note on a node holds for every candidate below it
        anc_cand, anc_node = self._expand(*self.ancestors, rows)
        order = np.argsort(anc_node, kind="stable")
        by_node, cand_by_node = anc_node[order], anc_cand[order]
        for col, group in enumerate(RELATION_GROUPS):
            # (candidate i, node its notes or its ancestors' notes name), then every candidate j
            # at or below that node; the link holds both ways
            owner, named = self._expand(*self.targets[group], anc_node)
            i, j = self._join(named, anc_cand[owner], by_node, cand_by_node)
            gaps(col, np.concatenate([i, j]), np.concatenate([j, i]))
        gem_cand, gem_code = self._expand(*self.gem, rows)
        order = np.argsort(gem_code, kind="stable")
        i, j = self._join(gem_code, gem_cand, gem_code[order], gem_cand[order])
        gaps(len(RELATION_GROUPS), i, j)
        out[:, len(RELATION_GROUPS) + 1] = self.log_xrefs[rows]
        out[:, len(RELATION_GROUPS) + 2] = self.log_gem_links[rows]
        return out

    def state_dict(self, prefix: str = "relations.") -> dict[str, Tensor]:
        """The arrays as tensors, for ``model.safetensors``."""
        out = {
            f"{prefix}ancestors_ptr": torch.from_numpy(self.ancestors[0].copy()),
            f"{prefix}ancestors_idx": torch.from_numpy(self.ancestors[1].copy()),
            f"{prefix}gem_ptr": torch.from_numpy(self.gem[0].copy()),
            f"{prefix}gem_idx": torch.from_numpy(self.gem[1].copy()),
            f"{prefix}xrefs": torch.from_numpy(self.xrefs.copy()),
        }
        for g, (ptr, idx) in self.targets.items():
            out[f"{prefix}{g}_ptr"] = torch.from_numpy(ptr.copy())
            out[f"{prefix}{g}_idx"] = torch.from_numpy(idx.copy())
        return out

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, Tensor], num_labels: int, prefix: str = "relations."
    ) -> RelationTable:
        """Rebuild from :meth:`state_dict` output.

        Raises:
            KeyError: a missing array.
            ValueError: inconsistent arrays.
        """

        def pair(name: str) -> tuple[np.ndarray, np.ndarray]:
            return state[f"{prefix}{name}_ptr"].numpy(), state[f"{prefix}{name}_idx"].numpy()

        return cls(
            num_labels,
            pair("ancestors"),
            {g: pair(g) for g in RELATION_GROUPS},
            pair("gem"),
            state[f"{prefix}xrefs"].numpy(),
        )


def _category_max(values: Tensor, table: LabelTable, fill: float) -> Tensor:
    """Each note's maximum of ``values`` in every category.

    Shapes:
        values: ``(b, c)``; output: ``(b, num_categories)``.
    """
    out = torch.full((values.shape[0], table.num_categories), fill, dtype=values.dtype)
    return out.scatter_reduce_(1, table.category.expand(values.shape[0], -1), values, "amax")


def candidate_features(
    logits: Tensor,
    zero_shot: Tensor,
    coverage: Tensor,
    reliability: Tensor,
    table: LabelTable,
    *,
    top_k: int = 60,
    unseen_k: int = 20,
    rare_k: int = 0,
    rare_max_notes: int = 5,
    relations: RelationTable | None = None,
) -> list[tuple[Tensor, np.ndarray]]:
    """Each note's candidates and their :data:`FEATURES`.

    Candidates: the note's ``top_k`` labels by ``logits``, plus the ``unseen_k`` labels without
    training notes with the best zero-shot cosine and the ``unseen_k`` with the best dictionary
    coverage (ties by cosine), plus the ``rare_k`` labels with 1 to ``rare_max_notes`` training
    notes with the best ``logits``, without repeats. The rare pool reaches deeper into the
    long tail than ``top_k``, where a coder whose code vectors borrow from their KG neighbours
    ranks its rare codes better than one without them (CodiEsp dev: 40 more reach 75 % of the
    1-5 bucket's gold codes against 68 %).

    Args:
        logits: the coder's scores.
        zero_shot: best sentence / code-text cosine of every label.
        coverage: dictionary coverage of every label (zeros without a lexicon).
        reliability: the dictionary trust of every label.
        table: the label constants.
        top_k: candidates from the scores.
        unseen_k: candidates from each zero-shot signal among the unseen labels.
        rare_k: candidates from the scores among the labels with few training notes.
        rare_max_notes: the most training notes of a label in the rare pool.
        relations: the knowledge graph's links between labels; given, the features go on with
            :data:`RELATION_FEATURES`.

    Returns:
        Per note ``(rows, features)``.

    Shapes:
        logits, zero_shot, coverage: ``(b, c)``; reliability: ``(c,)``; rows: ``(k,)`` long;
        features: ``(k, f)`` float32 with ``f = len(FEATURES)`` (plus ``len(RELATION_FEATURES)``
        with ``relations``), ``k <= top_k + 2 * unseen_k + rare_k``.
    """
    logits, zero_shot, coverage = (t.detach().float() for t in (logits, zero_shot, coverage))
    b, c = logits.shape
    top_k, unseen_k = min(top_k, c), min(unseen_k, int((~table.seen).sum()))
    top = logits.topk(top_k, dim=1)
    parts = [top.indices]
    if unseen_k > 0:
        hide = table.seen.unsqueeze(0)
        parts.append(zero_shot.masked_fill(hide, -1e9).topk(unseen_k, dim=1).indices)
        parts.append((coverage + 0.01 * zero_shot).masked_fill(hide, -1e9).topk(unseen_k, dim=1).indices)
    if rare_k > 0:
        rare = table.seen & (table.log_train_notes < math.log1p(rare_max_notes + 0.5))  # counts are whole
        rare_k = min(int(rare_k), int(rare.sum()))
        if rare_k > 0:
            parts.append(logits.masked_fill(~rare.unsqueeze(0), -torch.inf).topk(rare_k, dim=1).indices)
    cat_l = _category_max(logits, table, -1e9)
    cat_z = _category_max(zero_shot, table, -1e9)
    cat_c = _category_max(coverage, table, 0.0)
    best = top.values[:, 0]
    tenth = top.values[:, min(9, top_k - 1)]
    z_max = zero_shot.amax(dim=1)
    # every note's candidates at once, as (note, row) pairs: each note's distinct rows, ascending
    pooled, _ = torch.cat(parts, dim=1).sort(dim=1)
    first = torch.ones_like(pooled, dtype=torch.bool)
    first[:, 1:] = pooled[:, 1:] != pooled[:, :-1]
    note = torch.arange(b).unsqueeze(1).expand_as(pooled)[first]
    rows = pooled[first]
    in_top = torch.zeros(b, c, dtype=torch.bool).scatter_(1, top.indices, True)
    cat = table.category[rows]
    li, zi, ci = logits[note, rows], zero_shot[note, rows], coverage[note, rows]
    rel = reliability[rows].float()
    feats = torch.stack(
        [
            li,
            li - best[note],
            li - tenth[note],
            zi,
            zi - z_max[note],
            ci,
            rel,
            ci * rel,
            table.log_train_notes[rows],
            table.seen[rows].float(),
            table.log_category_train_notes[cat],
            cat_l[note, cat],
            li - cat_l[note, cat],
            zi - cat_z[note, cat],
            table.unspecified[rows].float(),
            table.code_length[rows],
            cat_c[note, cat],
            in_top[note, rows].float(),
        ],
        dim=1,
    )
    bounds = np.cumsum(first.sum(1).numpy())[:-1].tolist()
    out = list(
        zip(torch.tensor_split(rows, bounds), np.split(feats.numpy().astype(np.float32), bounds), strict=True)
    )
    if relations is not None:  # per note: one note's joins stay small (faster than all notes' at once)
        scores = np.split(li.numpy(), bounds)
        out = [
            (r, np.hstack([x, relations.features(r.numpy(), s)]))
            for (r, x), s in zip(out, scores, strict=True)
        ]
    return out


def rerank_logits(
    logits: Tensor, candidates: Sequence[tuple[Tensor, np.ndarray]], trees: TreeEnsemble
) -> Tensor:
    """Replace each note's candidates' scores by the trees' log-odds; the rest stay below, in order.

    Every other label keeps its order and its gaps: it is shifted so that the best of them sits
    just below the lowest candidate, so ranks past the candidates do not change (and do not tie).

    Shapes:
        logits: ``(b, c)``; output: ``(b, c)``.
    """
    out = logits.detach().float().clone()
    if not len(candidates):
        return out
    if len(candidates) != out.shape[0]:
        raise ValueError(f"{len(candidates)} notes' candidates for {out.shape[0]} notes of scores")
    # one pass of the trees over every note's candidates
    counts = torch.tensor([len(rows) for rows, _ in candidates])
    note = torch.repeat_interleave(torch.arange(len(candidates)), counts)
    rows = torch.cat([r for r, _ in candidates]).long()
    new = torch.from_numpy(trees.decision_function(np.concatenate([f for _, f in candidates]))).float()
    rest = torch.ones_like(out, dtype=torch.bool)
    rest[note, rows] = False
    has_rest = rest.any(dim=1)
    top_rest = out.masked_fill(~rest, -torch.inf).amax(dim=1)
    new_min = torch.full((out.shape[0],), torch.inf).scatter_reduce_(0, note, new, "amin")
    shift = has_rest & (counts > 0)  # a note without candidates keeps its scores
    out[shift] = out[shift] - top_rest[shift, None] + (new_min[shift, None] - 1.0)
    out[note, rows] = new
    return out


class TreeEnsemble:
    """Binary gradient-boosted regression trees as flat arrays: ``log-odds = baseline + sum of leaves``.

    Node ``j`` of the flat arrays sends a row left when ``x[feature[j]] <= threshold[j]`` (right
    otherwise, and for NaN when ``missing_left[j]`` is 0); leaves have ``left == -1`` and hold
    ``value``. ``roots`` are the trees' first nodes.

    Args:
        feature, threshold, left, right, value, missing_left, roots: the arrays.
        baseline: the constant log-odds before the first tree.
        features: the column names the trees were fitted on.

    Shapes:
        node arrays: ``(num_nodes,)``; roots: ``(num_trees,)``.
    """

    KEYS = ("feature", "threshold", "left", "right", "value", "missing_left", "roots", "baseline")

    def __init__(
        self,
        feature: np.ndarray,
        threshold: np.ndarray,
        left: np.ndarray,
        right: np.ndarray,
        value: np.ndarray,
        missing_left: np.ndarray,
        roots: np.ndarray,
        baseline: float,
        features: Sequence[str] = FEATURES,
    ) -> None:
        self.feature = np.asarray(feature, dtype=np.int64)
        self.threshold = np.asarray(threshold, dtype=np.float64)
        self.left = np.asarray(left, dtype=np.int64)
        self.right = np.asarray(right, dtype=np.int64)
        self.value = np.asarray(value, dtype=np.float64)
        self.missing_left = np.asarray(missing_left, dtype=bool)
        self.roots = np.asarray(roots, dtype=np.int64)
        self.baseline = float(baseline)
        self.features = tuple(features)
        n = len(self.feature)
        if not all(
            len(a) == n for a in (self.threshold, self.left, self.right, self.value, self.missing_left)
        ):
            raise ValueError("tree arrays of different lengths")
        inner = self.left >= 0
        if (
            (self.roots < 0).any()
            or (self.roots >= max(n, 1)).any()
            or (self.left[inner] >= n).any()
            or (self.right[inner] >= n).any()
            or (self.right[inner] < 0).any()
            or (self.feature[inner] < 0).any()
            or (self.feature[inner] >= len(self.features)).any()
        ):
            raise ValueError("tree arrays point outside the trees or the features")
        # children come after their node (as the booster writes them), so every walk ends
        here = np.flatnonzero(inner)
        if (self.left[inner] <= here).any() or (self.right[inner] <= here).any():
            raise ValueError("tree arrays point back to an earlier node (a cycle)")

    @property
    def num_trees(self) -> int:
        """How many trees."""
        return len(self.roots)

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Log-odds of each row.

        Shapes:
            x: ``(n, len(features))``; output: ``(n,)`` float64.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"expected rows of {len(self.features)} features, got shape {tuple(x.shape)}")
        n, t = len(x), self.num_trees
        if not n or not t:
            return np.full(n, self.baseline)
        # Walk every (row, tree) pair down one level per step, dropping the pairs that reached a
        # leaf, so the work follows the actual path lengths (the trees are unbalanced: a few deep
        # paths, most short). Leaf values land in an (n, trees) table summed in tree order, the
        # same sum as the booster's.
        left, right, feature = self.left, self.right, self.feature
        flat = np.ascontiguousarray(x).ravel()
        pair = np.arange(n * t, dtype=np.int64)  # row * t + tree
        node = np.tile(self.roots, n)
        offset = (pair // t) * x.shape[1]  # where each pair's row starts in ``flat``
        leaf_value = np.zeros(n * t)
        has_nan = bool(np.isnan(flat).any())
        at_leaf = left[node] < 0
        while True:
            if at_leaf.any():
                leaf_value[pair[at_leaf]] = self.value[node[at_leaf]]
                walking = ~at_leaf
                pair, node, offset = pair[walking], node[walking], offset[walking]
            if not len(node):
                break
            val = flat[offset + feature[node]]
            go_left = val <= self.threshold[node]
            if has_nan:
                go_left |= np.isnan(val) & self.missing_left[node]
            node = np.where(go_left, left[node], right[node])
            at_leaf = left[node] < 0
        return self.baseline + leaf_value.reshape(n, t).sum(axis=1)

    def probability(self, x: np.ndarray) -> np.ndarray:
        """``sigmoid(decision_function(x))``. Shapes: ``(n, f)`` -> ``(n,)``."""
        return 1.0 / (1.0 + np.exp(-self.decision_function(x)))

    # ------------------------------------------------------------------ fitting and storage

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        *,
        features: Sequence[str] = FEATURES,
        max_iter: int = 200,
        learning_rate: float = 0.05,
        max_leaf_nodes: int = 15,
        min_samples_leaf: int = 40,
        l2_regularization: float = 1.0,
        seed: int = 0,
    ) -> TreeEnsemble:
        """Fit boosted trees (scikit-learn's ``HistGradientBoostingClassifier``) and flatten them.

        Args:
            x: feature rows.
            y: 0/1 targets.
            features: the column names.
            max_iter, learning_rate, max_leaf_nodes, min_samples_leaf, l2_regularization: the
                booster's settings.
            seed: its random state.

        Returns:
            The trees.

        Raises:
            ValueError: a single class in ``y``.

        Shapes:
            x: ``(n, len(features))``; y: ``(n,)``.
        """
        from sklearn.ensemble import HistGradientBoostingClassifier

        y = np.asarray(y).astype(int)
        if len(np.unique(y)) != 2:
            raise ValueError("the reranker needs positive and negative candidates to learn from")
        clf = HistGradientBoostingClassifier(
            max_iter=max_iter,
            learning_rate=learning_rate,
            max_leaf_nodes=max_leaf_nodes,
            min_samples_leaf=min_samples_leaf,
            l2_regularization=l2_regularization,
            early_stopping=False,
            random_state=seed,
        )
        clf.fit(np.asarray(x, dtype=np.float64), y)
        return cls.from_sklearn(clf, features)

    @classmethod
    def from_sklearn(cls, clf: Any, features: Sequence[str] = FEATURES) -> TreeEnsemble:
        """Flatten a fitted binary ``HistGradientBoostingClassifier`` (numeric features only)."""
        parts: dict[str, list[np.ndarray]] = {
            k: [] for k in ("feature", "threshold", "left", "right", "value")
        }
        missing, roots, offset = [], [], 0
        for (tree,) in clf._predictors:
            nodes = tree.nodes
            leaf = nodes["is_leaf"].astype(bool)
            roots.append(offset)
            parts["feature"].append(np.where(leaf, 0, nodes["feature_idx"]))
            parts["threshold"].append(nodes["num_threshold"].astype(np.float64))
            parts["left"].append(np.where(leaf, -1, nodes["left"].astype(np.int64) + offset))
            parts["right"].append(np.where(leaf, -1, nodes["right"].astype(np.int64) + offset))
            parts["value"].append(np.where(leaf, nodes["value"], 0.0))
            missing.append(nodes["missing_go_to_left"].astype(bool))
            offset += len(nodes)
        baseline = float(np.ravel(clf._baseline_prediction)[0])
        cat = lambda k: np.concatenate(parts[k]) if parts[k] else np.zeros(0)  # noqa: E731
        return cls(
            cat("feature"),
            cat("threshold"),
            cat("left"),
            cat("right"),
            cat("value"),
            np.concatenate(missing) if missing else np.zeros(0, dtype=bool),
            np.asarray(roots),
            baseline,
            features,
        )

    def state_dict(self, prefix: str = "reranker.") -> dict[str, Tensor]:
        """The arrays as tensors, for ``model.safetensors``."""
        return {
            f"{prefix}feature": torch.from_numpy(self.feature.copy()),
            f"{prefix}threshold": torch.from_numpy(self.threshold.copy()),
            f"{prefix}left": torch.from_numpy(self.left.copy()),
            f"{prefix}right": torch.from_numpy(self.right.copy()),
            f"{prefix}value": torch.from_numpy(self.value.copy()),
            f"{prefix}missing_left": torch.from_numpy(self.missing_left.astype(np.uint8)),
            f"{prefix}roots": torch.from_numpy(self.roots.copy()),
            f"{prefix}baseline": torch.tensor([self.baseline], dtype=torch.float64),
        }

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, Tensor], features: Sequence[str], prefix: str = "reranker."
    ) -> TreeEnsemble:
        """Rebuild from :meth:`state_dict` output.

        Raises:
            KeyError: a missing array.
            ValueError: inconsistent arrays.
        """
        a = {k: state[prefix + k].numpy() for k in cls.KEYS}
        return cls(
            a["feature"],
            a["threshold"],
            a["left"],
            a["right"],
            a["value"],
            a["missing_left"].astype(bool),
            a["roots"],
            float(a["baseline"][0]),
            features,
        )
