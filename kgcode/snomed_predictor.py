"""Predicted ICD-10-CM -> SNOMED CT links: a graph model with a learned, calibrated reranker.

The ``predicted`` kind of ``kgcode map``. Open data links ~2,800 ICD-10-CM codes to SNOMED CT ids
through Disease Ontology / Mondo concepts; this module learns from those links to propose links
for the other codes, each with a calibrated probability and the concept that carries the id.

The task is code -> concept link prediction: a SNOMED CT id is scored by the best DO/Mondo concept
that carries it (``score(S) = max over X with xref X->S of p(code, X)``), so every prediction names
its ``via`` concept, and SNOMED descriptions are never needed.

Design (measured in ``bench/bench_map.py``, numbers in ``bench/results/map.json``):

1. **Text** (:mod:`kg.texts`, MiniLM, cached once in :class:`text_encoder.EmbeddingCache`): the
   code's text (title; synonyms and inclusion terms; parent titles) against every *name* of a
   concept (label and each synonym), max over names. Synonyms matter: title vs. labels alone gives
   Hits@1 0.73 on the 2,823 linked codes, title vs. all names 0.83.
2. **Graph encoder** (:class:`gnn.rgcn.RGCNEncoder`, registered ``"rgcn"``) over the subgraph
   that can explain a link: ICD-10-CM, ICD-9-CM, DOID, MONDO and SNOMED CT id nodes, relations
   ``is_a``, ``gem_equivalent``, ``xref`` to ICD-9-CM, ``xref`` to SNOMED CT, ``equivalent``
   (MONDO = DOID), each with its reverse. Node features: a fixed 64-component PCA of the MiniLM
   text vectors plus a one-hot of the system. Trained for link prediction with a DistMult
   decoder and a sampled softmax (positives, 16 text-similar hard negatives per code, 2,048
   random candidates shared per epoch), full-batch on the 2-hop neighbourhood of the training
   codes and candidates (60,000 nodes instead of 163,000: exact for a 2-layer encoder).
   **No ICD-10-CM <-> DO/Mondo cross-reference is ever an edge of the encoder's graph**: those
   links are only supervision, so a code's embedding never contains its own link.
3. **Explicit path features** (what the encoder blurs), always computed *leave-one-out* (the
   code's own cross-references are never read): GEM paths (code -gem- ICD-9 code <-xref- concept,
   also through the MONDO/DOID equivalent, with the GEM fan-out and approximate flag); the
   nearest ICD-10-CM ancestor / descendant / siblings linked to the concept (or to its
   equivalent); the concept being a DO child of a concept linked to an ancestor (or a DO parent
   of one linked to a descendant); an exact normalised name match.
4. **Reranker**: a small MLP over these features for the union of the top-40 text candidates,
   the top-40 graph candidates and up to 32 concepts reached by a path; listwise softmax loss.
5. **Cross-fitting**: the training codes are split into 3 folds; for each fold one graph
   encoder and one reranker are trained without that fold's links. A code is always scored by
   one fold's pair: a training code by the fold that never saw its links, any other code by a
   fold picked by a hash of its id. Every score at prediction time is then of the same kind as
   the out-of-fold scores the calibration was fitted on. (Measured on seed 0: one encoder
   retrained on all codes, or the fold encoders averaged, ranked marginally better, and a
   reranker retrained on all codes too, but the threshold chosen for out-of-fold precision 0.90
   then gave 0.75-0.79 on the held-out codes; cross-fitted, it gives 0.90.)
6. **Calibration**: Platt scaling (logistic regression on the reranker score and its margin to
   the code's best candidate) fitted on the out-of-fold scores of the training codes; the
   threshold is the lowest calibrated score at which out-of-fold precision of (code, SNOMED id)
   pairs is >= ``target_precision`` (0.9).

Honest limits. The explicit path features carry most of the graph signal: the reranker without
the encoder's score ranks about as well (see ``c_no_gnn`` in the benchmark); the R-GCN score alone
is weaker than text similarity with synonyms. The training codes are those *with* a link, whose
true concept is almost never the concept of an ancestor (6% of 1,067 linked children share their
linked parent's concept), so ``predicted`` links favour a more specific concept and rarely repeat
the ancestor's one (the ``inherited`` kind shows that); the calibrated threshold is measured on
held-out linked codes, and its precision on codes that never had a link is unknown.

A trained predictor is a folder (written atomically, like a KG folder): ``config.json``
(format version, package / torch / torch-geometric versions, the KG's source versions, the
graph-encoder and reranker configs, threshold), ``model.safetensors`` (the state_dict only),
``index.json`` (graph node ids in row order, candidate concepts, the fold of each training
code), ``embeddings.safetensors`` (the codes' text vectors and graph query vectors, the
candidates' graph and name vectors, float16, so a load needs neither MiniLM nor the encoders'
forward pass), ``model_card.json`` (metrics, split seed, data, timings).

Example:
    >>> predictor = train_predictor(kg)                     # doctest: +SKIP
    >>> predictor.predict("ICD10CM:K21.9", top_k=1)         # doctest: +SKIP
    [{'target': 'SCTID:235595009', 'score': 0.97, 'via': 'DOID:8534',
      'via_label': 'gastroesophageal reflux disease'}]
    >>> predictor.save(cache_dir() / "snomed_predictor")    # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
import zlib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kg.graph import SNOMED_MATCHES
from kg.texts import node_names, node_texts, texts_key_parts

if TYPE_CHECKING:
    from kg.graph import KnowledgeGraph
    from text_encoder.base import TextEncoder

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LinkGraph",
    "Predictor",
    "PredictorConfig",
    "PredictorFormatError",
    "compute_text_vectors",
    "default_predictor_dir",
    "linked_codes",
    "load_default_predictor",
    "train_predictor",
]

logger = logging.getLogger(__name__)

FORMAT = "kgcode-snomed-predictor"
FORMAT_VERSION = 1

#: Systems whose nodes get a text embedding (the subgraph the predictor reads).
TEXT_SYSTEMS: tuple[str, ...] = ("DOID", "MONDO", "ICD9CM", "ICD10CM")
#: Node systems of the graph encoder's subgraph, in one-hot order.
GNN_SYSTEMS: tuple[str, ...] = ("ICD10CM", "ICD9CM", "DOID", "MONDO", "SCTID")
#: Relations of the graph encoder's subgraph (each also reversed).
GNN_RELATIONS: tuple[str, ...] = ("is_a", "gem_equivalent", "xref_icd9", "xref_sctid", "equivalent")
#: Tokens per text for the encoder: title, synonyms and a parent title fit.
TEXT_MAX_LENGTH = 128

_CONCEPT_SYSTEMS = frozenset({"DOID", "MONDO"})
_SKIP_KINDS = frozenset({"chapter", "block"})
_TOKEN = re.compile(r"[a-z0-9]+")
_FILLER = frozenset({"nos", "unspecified", "the", "of", "disease", "disorder"})

#: Columns of the reranker's feature matrix, in order.
FEATURES: tuple[str, ...] = (
    "text_name",
    "text_node",
    "text_rank",
    "text_margin",
    "gnn",
    "gnn_rank",
    "gnn_margin",
    "anc",
    "anc_eq",
    "desc",
    "desc_eq",
    "sib",
    "sib_eq",
    "gem",
    "gem_eq",
    "gem_spec",
    "gem_exact",
    "do_child_of_anc",
    "do_parent_of_desc",
    "lex_exact",
    "concept_degree",
    "concept_nsct",
    "is_mondo",
)
_F = {name: i for i, name in enumerate(FEATURES)}


class PredictorFormatError(ValueError):
    """A predictor folder is missing a file, or is of another format version.

    Args:
        path: the file at fault.
        message: what is wrong.
    """

    def __init__(self, path: str | Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = Path(path)


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line (for :class:`PredictorFormatError`)."""
    text = " ".join(str(exc).split())
    return f"unreadable: {text[:300]}" if text else f"unreadable: {type(exc).__name__}"


def _show(progress: bool | None) -> bool:
    if progress is not None:
        return progress
    return sys.stderr.isatty() and logger.getEffectiveLevel() <= logging.INFO


# ---------------------------------------------------------------------- the predictor's graph


def linked_codes(kg: KnowledgeGraph, system: str = "ICD10CM") -> dict[str, list[str]]:
    """Codes of ``system`` with at least one SNOMED CT id (:meth:`KnowledgeGraph.to_snomed`).

    Chapters and blocks are left out.

    Args:
        kg: the graph.
        system: ``ICD10CM`` or ``ICD9CM``.

    Returns:
        ``{code: sorted SNOMED CT ids}``, codes sorted.
    """
    index = kg._snomed()
    nodes = kg.graph._node
    out: dict[str, list[str]] = {}
    for code in sorted(index.icd_to_via):
        if not code.startswith(system + ":") or nodes[code].get("kind") in _SKIP_KINDS:
            continue
        scts = {s for via, _, _ in index.icd_to_via[code] for s, _, _ in index.via_to_sct.get(via, ())}
        if scts:
            out[code] = sorted(scts)
    return out


@dataclass
class LinkGraph:
    """The predictor's own copy of the parts of the KG it reads (never the caller's object).

    Built by :meth:`from_kg` with the cross-references into ``excluded`` codes left out, so a
    model trained on it cannot see those links (the leakage guard of the evaluation).

    Attributes:
        ids: node ids of the graph-encoder subgraph, sorted by (system, id).
        edge_index: forward edges of the subgraph in rows of ``ids`` (reverses are added by
            :meth:`tensors`).
        edge_type: relation id of each edge (into :data:`GNN_RELATIONS`).
        titles: node id -> title (codes and concepts).
        code_links: ICD code -> DO/Mondo concepts with an ``exact``/``dbxref`` xref to it.
        concept_codes: concept -> ICD-10-CM codes it links.
        concept_scts: concept -> SNOMED CT ids it carries (``exact``/``dbxref``).
        parents, children: ICD ``is_a`` (both systems).
        concept_parents, concept_children: DO ``is_a``.
        equiv: MONDO <-> DOID equivalents (both ways).
        gem: ICD-10-CM code -> ``{ICD-9-CM code: approximate}`` (both GEM files).
        gem_fanout: ICD-9-CM code -> number of ICD-10-CM codes it GEMs with.
        icd9_concepts: ICD-9-CM code -> concepts with an ``exact``/``dbxref`` xref to it.
        names: node id -> names (title and synonyms) of codes and candidate concepts.
        excluded: the codes whose cross-references were removed.
    """

    ids: list[str]
    edge_index: np.ndarray
    edge_type: np.ndarray
    titles: dict[str, str]
    code_links: dict[str, set[str]]
    concept_codes: dict[str, set[str]]
    concept_scts: dict[str, list[str]]
    parents: dict[str, list[str]]
    children: dict[str, list[str]]
    concept_parents: dict[str, list[str]]
    concept_children: dict[str, list[str]]
    equiv: dict[str, set[str]]
    gem: dict[str, dict[str, bool]]
    gem_fanout: dict[str, int]
    icd9_concepts: dict[str, set[str]]
    kinds: dict[str, str]
    billable: set[str]
    names: dict[str, list[str]]
    excluded: frozenset[str] = frozenset()
    sources: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_kg(cls, kg: KnowledgeGraph, exclude: Collection[str] = ()) -> LinkGraph:
        """Copy what the predictor needs out of ``kg``, without the links into ``exclude``.

        Args:
            kg: the graph (read, never changed or kept).
            exclude: codes (``ICD10CM:...``) whose incoming ``xref`` edges (any match, from any
                concept) are left out.

        Returns:
            The link graph.
        """
        from kg.graph import gc_paused

        excluded = frozenset(exclude)
        nodes = kg.graph._node
        wanted = set(GNN_SYSTEMS)
        ids = sorted(
            (n for n, d in nodes.items() if d["system"] in wanted),
            key=lambda n: (GNN_SYSTEMS.index(nodes[n]["system"]), n),
        )
        row = {n: i for i, n in enumerate(ids)}
        rel_id = {r: i for i, r in enumerate(GNN_RELATIONS)}
        src_rows: list[int] = []
        dst_rows: list[int] = []
        types: list[int] = []
        code_links: dict[str, set[str]] = {}
        concept_codes: dict[str, set[str]] = {}
        concept_scts: dict[str, list[str]] = {}
        parents: dict[str, list[str]] = {}
        children: dict[str, list[str]] = {}
        concept_parents: dict[str, list[str]] = {}
        concept_children: dict[str, list[str]] = {}
        equiv: dict[str, set[str]] = {}
        gem: dict[str, dict[str, bool]] = {}
        gem9: dict[str, set[str]] = {}
        icd9_concepts: dict[str, set[str]] = {}
        removed = 0

        def edge(s: str, d: str, rel: str) -> None:
            src_rows.append(row[s])
            dst_rows.append(row[d])
            types.append(rel_id[rel])

        with gc_paused():
            for src, nbrs in kg.graph._succ.items():
                s_sys = nodes[src]["system"]
                if s_sys not in wanted:
                    continue
                for dst, keydict in nbrs.items():
                    d_sys = nodes[dst]["system"]
                    if d_sys not in wanted:
                        continue
                    for rel, data in keydict.items():
                        if rel == "is_a":
                            edge(src, dst, "is_a")
                            if s_sys in ("ICD10CM", "ICD9CM"):
                                parents.setdefault(src, []).append(dst)
                                children.setdefault(dst, []).append(src)
                            elif s_sys in _CONCEPT_SYSTEMS:
                                concept_parents.setdefault(src, []).append(dst)
                                concept_children.setdefault(dst, []).append(src)
                        elif rel == "gem_equivalent":
                            edge(src, dst, "gem_equivalent")
                            icd10, icd9 = (src, dst) if s_sys == "ICD10CM" else (dst, src)
                            if icd10.startswith("ICD10CM:") and icd9.startswith("ICD9CM:"):
                                approx = bool((data.get("attrs") or {}).get("approximate", True))
                                slot = gem.setdefault(icd10, {})
                                slot[icd9] = slot.get(icd9, True) and approx
                                gem9.setdefault(icd9, set()).add(icd10)
                        elif rel == "equivalent":
                            edge(src, dst, "equivalent")
                            equiv.setdefault(src, set()).add(dst)
                            equiv.setdefault(dst, set()).add(src)
                        elif rel == "xref" and s_sys in _CONCEPT_SYSTEMS:
                            if dst in excluded:
                                removed += 1
                                continue
                            match = str((data.get("attrs") or {}).get("match", "")).lower()
                            linked = match in SNOMED_MATCHES
                            if d_sys == "ICD10CM":
                                if linked:
                                    code_links.setdefault(dst, set()).add(src)
                                    concept_codes.setdefault(src, set()).add(dst)
                            elif d_sys == "ICD9CM":
                                edge(src, dst, "xref_icd9")
                                if linked:
                                    code_links.setdefault(dst, set()).add(src)
                                    icd9_concepts.setdefault(dst, set()).add(src)
                            elif d_sys == "SCTID":
                                edge(src, dst, "xref_sctid")
                                if linked:
                                    concept_scts.setdefault(src, []).append(dst)
            titles = {n: nodes[n].get("title") or "" for n in ids if not n.startswith("SCTID:")}
            kinds = {n: nodes[n].get("kind") or "" for n in ids if n.startswith(("ICD10CM:", "ICD9CM:"))}
            billable = {n for n in kinds if nodes[n].get("billable")}
            names = {
                n: node_names(kg, n)
                for n in ids
                if n.startswith("ICD10CM:") or (n in concept_scts) or (n.startswith(("DOID:", "MONDO:")))
            }
        for scts in concept_scts.values():
            scts.sort(key=lambda s: int(s.partition(":")[2]))
        manifest = kg.manifest or {}
        sources = {
            str(s.get("name")): str(s.get("version"))
            for s in (manifest.get("sources") or kg.build_report.get("sources") or [])
            if isinstance(s, dict)
        }
        if excluded:
            logger.info("link graph: left out %d cross-reference(s) into %d code(s)", removed, len(excluded))
        return cls(
            ids=ids,
            edge_index=np.array([src_rows, dst_rows], dtype=np.int64).reshape(2, -1),
            edge_type=np.array(types, dtype=np.int64),
            titles=titles,
            code_links=code_links,
            concept_codes=concept_codes,
            concept_scts=concept_scts,
            parents=parents,
            children=children,
            concept_parents=concept_parents,
            concept_children=concept_children,
            equiv=equiv,
            gem=gem,
            gem_fanout={k: len(v) for k, v in gem9.items()},
            icd9_concepts=icd9_concepts,
            kinds=kinds,
            billable=billable,
            names=names,
            excluded=excluded,
            sources=sources,
        )

    @property
    def candidates(self) -> list[str]:
        """The concepts that carry at least one SNOMED CT id, sorted."""
        return sorted(self.concept_scts)

    def tensors(self) -> tuple[Tensor, Tensor]:
        """``(edge_index, edge_type)`` with every edge also reversed (relation ``r + R``).

        Shapes:
            - edge_index: ``(2, 2 * num_edges)``
            - edge_type: ``(2 * num_edges,)``, values in ``[0, 2 * len(GNN_RELATIONS))``
        """
        cached = self.__dict__.get("_tensors")
        if cached is None:
            ei = torch.from_numpy(self.edge_index)
            et = torch.from_numpy(self.edge_type)
            n_rel = len(GNN_RELATIONS)
            cached = self.__dict__["_tensors"] = (
                torch.cat([ei, ei.flip(0)], dim=1),
                torch.cat([et, et + n_rel]),
            )
        return cached

    def links_of(self, code: str) -> set[str]:
        """Concepts linked to ``code`` (empty for an excluded code)."""
        return self.code_links.get(code, set())


# ---------------------------------------------------------------------- text embeddings


def default_embedding_dir() -> Path:
    """Where code-text embeddings are cached: ``cache_dir()/"embeddings"``."""
    from kgcode.paths import cache_dir

    return cache_dir() / "embeddings"


def default_predictor_dir() -> Path:
    """Where ``kgcode train-linker`` saves and ``kgcode map`` looks: ``cache_dir()/"snomed_predictor"``."""
    from kgcode.paths import cache_dir

    return cache_dir() / "snomed_predictor"


def default_text_encoder() -> TextEncoder:
    """The plain all-MiniLM-L6-v2 encoder, ``max_length`` :data:`TEXT_MAX_LENGTH`."""
    from text_encoder.hf import HFTextEncoder

    return HFTextEncoder(max_length=TEXT_MAX_LENGTH, batch_size=128)


def embed_node_texts(
    kg: KnowledgeGraph,
    ids: Sequence[str],
    encoder: TextEncoder,
    cache_dir: str | Path | None,
    *,
    show_progress_bar: bool | None = None,
) -> Tensor:
    """Embeddings of :func:`kg.texts.node_text` for ``ids``, one cache entry per system.

    Args:
        kg: the graph.
        ids: node ids (any mix of systems).
        encoder: the text encoder.
        cache_dir: the embedding cache folder (``None``: compute without caching).
        show_progress_bar: passed to the encoder.

    Returns:
        L2-normalised float32 vectors, row ``i`` for ``ids[i]``; zero rows for empty texts.

    Shapes:
        output: ``(len(ids), encoder.dim)``
    """
    out = torch.zeros(len(ids), encoder.dim)
    by_system: dict[str, list[int]] = {}
    for i, node_id in enumerate(ids):
        by_system.setdefault(node_id.partition(":")[0], []).append(i)
    for system, rows in by_system.items():
        # With a cache, one entry holds every node of the system (sorted by id), so any subset
        # of ids, and every model that embeds node texts (the coder too), shares it.
        wanted = [ids[i] for i in rows]
        if cache_dir is not None:
            wanted = sorted(n for n, d in kg.graph._node.items() if d.get("system") == system)
        sys_ids, texts = node_texts(kg, wanted)
        keep = [j for j, t in enumerate(texts) if t]
        if not keep:
            continue
        kept = [sys_ids[j] for j in keep]
        vecs = _embed(
            kg,
            kept,
            [texts[j] for j in keep],
            encoder,
            cache_dir,
            kind=f"node_text/{system}",
            show_progress_bar=show_progress_bar,
        )
        pos = {n: j for j, n in enumerate(kept)}
        have = [(i, pos[ids[i]]) for i in rows if ids[i] in pos]
        if have:
            dst, src = zip(*have, strict=True)
            out[torch.tensor(dst)] = vecs[torch.tensor(src)]
    return out


def embed_names(
    kg: KnowledgeGraph,
    ids: Sequence[str],
    encoder: TextEncoder,
    cache_dir: str | Path | None,
    *,
    titles_only: bool = False,
    show_progress_bar: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Embeddings of every name (title and each synonym) of ``ids``, one row per name.

    Args:
        kg: the graph.
        ids: node ids.
        encoder: the text encoder.
        cache_dir: the embedding cache folder (``None``: compute without caching).
        titles_only: only the title of each node.
        show_progress_bar: passed to the encoder.

    Returns:
        ``(owner, vectors)``: ``owner[j]`` is the position in ``ids`` of the node name ``j``
        belongs to.

    Shapes:
        - owner: ``(num_names,)``, long
        - vectors: ``(num_names, encoder.dim)``
    """
    owner: list[int] = []
    name_ids: list[str] = []
    texts: list[str] = []
    for i, node_id in enumerate(ids):
        names = node_names(kg, node_id)
        if titles_only:
            names = names[:1]
        for k, name in enumerate(names):
            owner.append(i)
            name_ids.append(f"{node_id}#{k}")
            texts.append(name)
    kind = "title" if titles_only else "names"
    vecs = _embed(kg, name_ids, texts, encoder, cache_dir, kind=kind, show_progress_bar=show_progress_bar)
    return torch.tensor(owner, dtype=torch.long), vecs


def _embed(
    kg: KnowledgeGraph,
    ids: Sequence[str],
    texts: Sequence[str],
    encoder: TextEncoder,
    cache_dir: str | Path | None,
    *,
    kind: str,
    show_progress_bar: bool | None,
) -> Tensor:
    if not ids:
        return torch.zeros(0, encoder.dim)
    if cache_dir is None:
        return encoder.encode(list(texts), batch_size=128, show_progress_bar=show_progress_bar).float()
    from text_encoder.cache import EmbeddingCache

    cache = EmbeddingCache(cache_dir)
    return cache.get_or_compute(
        texts_key_parts(kg, kind=kind),
        ids,
        texts,
        encoder,
        batch_size=128,
        show_progress_bar=show_progress_bar,
    )


# ---------------------------------------------------------------------- model


class Reranker(nn.Module):
    """A small MLP that scores (code, concept) candidates from :data:`FEATURES`.

    Args:
        n_features: number of input features.
        hidden: hidden width.

    Shapes:
        - features: ``(..., n_features)``
        - output: ``(...)``
    """

    def __init__(self, n_features: int, hidden: int = 64) -> None:
        super().__init__()
        self.n_features = n_features
        self.hidden = hidden
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("std", torch.ones(n_features))
        self.net = nn.Sequential(
            nn.Linear(n_features, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, 1),
        )

    def fit_scaler(self, features: Tensor) -> None:
        """Set the input standardisation from training features ``(n, n_features)``."""
        self.mean.copy_(features.mean(0))
        self.std.copy_(features.std(0).clamp_min(1e-4))

    def forward(self, features: Tensor) -> Tensor:
        return self.net((features - self.mean) / self.std).squeeze(-1)


class LinkScorer(nn.Module):
    """One graph encoder with its DistMult decoder: ``score(c, X) = scale * <z_c * r, z_X>``.

    Args:
        gnn: the graph encoder (e.g. ``RGCNEncoder``).
    """

    def __init__(self, gnn: nn.Module) -> None:
        super().__init__()
        self.gnn = gnn
        out_dim = int(gnn.out_dim)  # type: ignore[attr-defined]
        self.relation = nn.Parameter(torch.ones(out_dim))
        self.log_scale = nn.Parameter(torch.tensor(math.log(20.0)))

    def reset_parameters(self) -> None:
        """Re-initialise the encoder and the decoder."""
        self.gnn.reset_parameters()  # type: ignore[operator]
        with torch.no_grad():
            self.relation.fill_(1.0)
            self.log_scale.fill_(math.log(20.0))

    def encode(self, x: Tensor, edge_index: Tensor, edge_type: Tensor) -> Tensor:
        """L2-normalised node embeddings ``(num_nodes, out_dim)``."""
        return F.normalize(self.gnn(x, edge_index, edge_type), dim=-1)

    def query(self, z: Tensor) -> Tensor:
        """Code-side vectors: ``decode(a, b) == query(a) @ b.T``."""
        return z * self.relation * self.log_scale.exp()


class SnomedLinkModel(nn.Module):
    """Cross-fitted graph scorers and rerankers + Platt calibration (all in one state_dict).

    ``scorers`` and ``rerankers`` hold one model per fold, each trained without that fold's
    links; a code is always scored by one fold's pair (:func:`_scorer_of`): a training code by
    the fold that never saw its links, any other code by a fold picked by a hash of its id. So
    every score at prediction time is of the same kind as the out-of-fold scores the
    calibration and the threshold were fitted on. So the reranker sees graph
    scores of the same kind in training and at prediction time (a single encoder retrained
    on all codes gave scores on a different scale: the calibrated threshold then reached
    0.75 precision on held-out codes instead of the 0.90 it was chosen for).

    The encoders' input is the text vector reduced by a fixed PCA (``pca_mean``, ``pca``) plus
    a one-hot of the node's system: on 2 shared CPU cores the 384-wide input layer over ~60,000
    nodes was the largest single cost of an epoch.

    Args:
        gnns: one graph encoder per fold (``in_dim = pca_dim + len(GNN_SYSTEMS)``).
        text_dim: size of the text vectors.
        pca_dim: number of principal components fed to the encoders.
        n_features: reranker input size.
        reranker_hidden: reranker hidden width.
        n_rerankers: one reranker per fold (cross-fitted like the scorers).
    """

    def __init__(
        self,
        gnns: Sequence[nn.Module],
        text_dim: int,
        pca_dim: int,
        n_features: int = len(FEATURES),
        reranker_hidden: int = 32,
        n_rerankers: int = 1,
    ) -> None:
        super().__init__()
        self.scorers = nn.ModuleList(LinkScorer(g) for g in gnns)
        self.register_buffer("pca_mean", torch.zeros(text_dim))
        self.register_buffer("pca", torch.eye(text_dim)[:, :pca_dim].clone())
        self.rerankers = nn.ModuleList(
            Reranker(n_features, reranker_hidden) for _ in range(max(1, n_rerankers))
        )
        #: Platt scaling: p = sigmoid(calib[0] * score + calib[1] * (score - best) + calib[2]).
        self.register_buffer("calib", torch.tensor([1.0, 0.0, 0.0]))

    def fit_pca(self, text_vecs: Tensor, seed: int = 0, sample: int = 50_000) -> None:
        """Fit the input PCA on (a sample of) the non-zero text vectors ``(n, text_dim)``."""
        keep = text_vecs.abs().sum(1) > 0
        vecs = text_vecs[keep]
        if vecs.size(0) > sample:
            gen = torch.Generator().manual_seed(seed)
            vecs = vecs[torch.randperm(vecs.size(0), generator=gen)[:sample]]
        mean = vecs.mean(0)
        k = self.pca.size(1)
        self.pca_mean.copy_(mean)
        if vecs.size(0) > k:
            _, _, v = torch.linalg.svd(vecs - mean, full_matrices=False)
            self.pca.copy_(v[:k].T)

    def inputs(self, text_vecs: Tensor, node_systems: Tensor) -> Tensor:
        """Encoder input ``(n, pca_dim + len(GNN_SYSTEMS))`` from text vectors and system ids."""
        has_text = (text_vecs.abs().sum(1, keepdim=True) > 0).to(text_vecs.dtype)
        reduced = (text_vecs - self.pca_mean) @ self.pca * has_text
        return torch.cat([reduced, F.one_hot(node_systems, len(GNN_SYSTEMS)).to(reduced.dtype)], dim=1)

    def calibrate(self, score: Tensor, best: Tensor) -> Tensor:
        """Calibrated probabilities of reranker scores (``best``: the code's top score)."""
        a, b, c = self.calib
        return torch.sigmoid(a * score + b * (score - best) + c)


def _scorer_of(node_id: str, n_scorers: int, folds: dict[str, int]) -> int:
    """The scorer that scores a code: its own fold's for a training code (the one trained
    without its links), else one picked by a stable hash of the id."""
    fold = folds.get(node_id)
    return fold if fold is not None else zlib.crc32(node_id.encode("utf-8")) % n_scorers


def _assigned(
    scorers: Sequence[LinkScorer],
    embeddings: Sequence[Tensor],
    ids: Sequence[str],
    folds: dict[str, int],
    concept_rows: Tensor,
) -> tuple[Tensor, Tensor]:
    """Query vectors of every node and key vectors of the concepts such that ``q[i] @ k[j]`` is
    the score of the scorer assigned to node ``i`` (:func:`_scorer_of`).

    Every code is scored by one fold's scorer, never an average: a training code's graph score
    (the reranker's training feature) and any other code's (at prediction) then come from the
    same kind of model, and the calibration fitted on the former holds for the latter (an
    average of the fold scorers, or one scorer retrained on all codes, ranked a little better
    but gave sharper scores: held-out precision at the threshold chosen for 0.90 fell to 0.75).
    """
    n = len(scorers)
    d = embeddings[0].size(1)
    assign = torch.tensor([_scorer_of(node, n, folds) for node in ids], dtype=torch.long)
    q = torch.zeros(len(ids), n * d)
    with torch.no_grad():
        for k, (scorer, z) in enumerate(zip(scorers, embeddings, strict=True)):
            rows = (assign == k).nonzero().squeeze(1)
            q[rows, k * d : (k + 1) * d] = scorer.query(z[rows])
        keys = torch.cat([z[concept_rows] for z in embeddings], dim=1)
    return q, keys


# ---------------------------------------------------------------------- features


def _norm_name(text: str) -> str:
    toks = [t for t in _TOKEN.findall(text.lower()) if t not in _FILLER]
    return " ".join(toks)


class _Context:
    """Tensors and lookups shared by feature computation for one link graph and one model."""

    def __init__(
        self,
        lg: LinkGraph,
        node_vecs: Tensor,
        name_owner: Tensor,
        name_vecs: Tensor,
        top_text: int,
        top_gnn: int,
        max_path: int = 32,
    ) -> None:
        self.lg = lg
        self.max_path = max_path
        self.row = {n: i for i, n in enumerate(lg.ids)}
        self.concepts = lg.candidates
        self.cidx = {c: j for j, c in enumerate(self.concepts)}
        self.concept_rows = torch.tensor([self.row[c] for c in self.concepts], dtype=torch.long)
        self.node_vecs = node_vecs
        self.concept_node_vecs = node_vecs[self.concept_rows]
        self.name_owner = name_owner
        self.name_vecs = name_vecs
        self.top_text = top_text
        self.top_gnn = top_gnn
        n = len(self.concepts)
        eq = lg.equiv
        self.cluster_codes: list[set[str]] = []
        for c in self.concepts:
            codes: set[str] = set(lg.concept_codes.get(c, ()))
            for e in eq.get(c, ()):
                codes |= lg.concept_codes.get(e, set())
            self.cluster_codes.append(codes)
        self.static = np.zeros((n, 3), dtype=np.float32)
        for j, c in enumerate(self.concepts):
            self.static[j, 0] = len(self.cluster_codes[j])
            self.static[j, 1] = math.log1p(len(lg.concept_scts.get(c, ())))
            self.static[j, 2] = 1.0 if c.startswith("MONDO:") else 0.0
        self.lex: dict[str, set[int]] = {}
        for j, c in enumerate(self.concepts):
            for name in lg.names.get(c, ()):
                key = _norm_name(name)
                if key:
                    self.lex.setdefault(key, set()).add(j)
        #: Graph scores: ``zq[code_rows] @ zk.T`` (zeros when the graph encoder is not used).
        self.zq: Tensor = torch.zeros(len(lg.ids), 1)
        self.zk: Tensor = torch.zeros(n, 1)
        #: Feature columns the reranker never sees (zeroed before training and prediction).
        self.masked: list[int] = []

    def text_scores(self, code_rows: Tensor) -> tuple[Tensor, Tensor]:
        """``(name max, node)`` cosine scores of codes against all candidate concepts."""
        q = self.node_vecs[code_rows]
        sims = q @ self.name_vecs.T
        by_name = torch.full((len(code_rows), len(self.concepts)), -1.0)
        by_name.scatter_reduce_(1, self.name_owner.expand(len(code_rows), -1), sims, "amax")
        return by_name, q @ self.concept_node_vecs.T


#: Ranks up to this are read off one partial sort (``topk``); the few candidates below it are
#: counted. A full sort of all ~14,000 concepts per code was most of the prediction time.
_RANK_TOP = 256


def _rank_feature(scores: Tensor, cand: Sequence[np.ndarray], top: int = _RANK_TOP) -> list[np.ndarray]:
    """``1 / log2(1 + rank)`` of the candidate columns of each row (rank 1 = best).

    The rank of a column is one plus the number of columns with a strictly higher score, so
    equal scores (a DO concept and its Mondo twin often share a name) share the better rank and
    the feature does not depend on a sort's tie order.

    Args:
        scores: one row of scores per code.
        cand: per row, the column indices wanted.
        top: ranks are read off a partial sort of this many columns; the rest are counted.

    Returns:
        Per row, the feature of each wanted column (float32).

    Shapes:
        - scores: ``(B, N)``
        - cand[b]: ``(n_b,)``; output[b]: ``(n_b,)``
    """
    k = min(top, scores.size(1))
    top_neg = (-scores.topk(k, dim=1).values).numpy()  # ascending
    values = scores.numpy()
    out: list[np.ndarray] = []
    for b, c in enumerate(cand):
        row = values[b]
        s = row[c]
        # every score above one at least the k-th best is among the k best
        r = 1 + np.searchsorted(top_neg[b], -s, side="left")
        below = s < -top_neg[b, -1]
        if below.any():
            r[below] = 1 + (row[None, :] > s[below][:, None]).sum(1)
        out.append((1.0 / np.log2(1.0 + r)).astype(np.float32))
    return out


def _path_hits(ctx: _Context, code: str) -> dict[int, dict[str, float]]:
    """Explicit path features of ``code`` (its own cross-references are never read)."""
    lg = ctx.lg
    cidx = ctx.cidx
    eq = lg.equiv
    hits: dict[int, dict[str, float]] = {}

    def put(concept: str, key: str, value: float, add: bool = False) -> None:
        j = cidx.get(concept)
        if j is None:
            return
        slot = hits.setdefault(j, {})
        slot[key] = slot.get(key, 0.0) + value if add else max(slot.get(key, 0.0), value)

    def linked(code_id: str, key: str, key_eq: str, value: float, add: bool = False) -> None:
        for y in lg.code_links.get(code_id, ()):
            put(y, key, value, add)
            for x in eq.get(y, ()):
                put(x, key_eq, value, add)

    # ancestors (and DO children of the concepts linked to them)
    frontier = [code]
    seen = {code}
    for d in range(1, 5):
        frontier = [p for f in frontier for p in lg.parents.get(f, ()) if p not in seen]
        seen.update(frontier)
        for a in frontier:
            if lg.kinds.get(a) in _SKIP_KINDS:
                continue
            linked(a, "anc", "anc_eq", 1.0 / d)
            for y in lg.code_links.get(a, ()):
                for y2 in (y, *eq.get(y, ())):
                    for z in lg.concept_children.get(y2, ()):
                        for z2 in (z, *eq.get(z, ())):
                            put(z2, "do_child_of_anc", 1.0 / d)
    # descendants (and DO parents of the concepts linked to them)
    frontier = [code]
    seen = {code}
    budget = 2000
    for d in range(1, 4):
        frontier = [k for f in frontier for k in lg.children.get(f, ()) if k not in seen]
        seen.update(frontier)
        budget -= len(frontier)
        for k in frontier:
            linked(k, "desc", "desc_eq", 1.0 / d)
            for y in lg.code_links.get(k, ()):
                for y2 in (y, *eq.get(y, ())):
                    for z in lg.concept_parents.get(y2, ()):
                        for z2 in (z, *eq.get(z, ())):
                            put(z2, "do_parent_of_desc", 1.0 / d)
        if budget <= 0:
            break
    # siblings
    sibs = {s for p in lg.parents.get(code, ()) for s in lg.children.get(p, ()) if s != code}
    n_linked = sum(1 for s in sibs if lg.code_links.get(s))
    if n_linked:
        for s in sibs:
            linked(s, "sib", "sib_eq", 1.0 / n_linked, add=True)
    # GEM paths: code -gem- ICD-9 code <-xref- concept
    for icd9, approx in lg.gem.get(code, {}).items():
        concepts = lg.icd9_concepts.get(icd9, ())
        if not concepts:
            continue
        spec = 1.0 / max(1, lg.gem_fanout.get(icd9, 1))
        for y in concepts:
            for x, key in ((y, "gem"), *((e, "gem_eq") for e in eq.get(y, ()))):
                put(x, key, 1.0, add=True)
                put(x, "gem_spec", spec)
                put(x, "gem_exact", 0.0 if approx else 1.0)
    # exact normalised name match
    for name in lg.names.get(code, ()):
        for j in ctx.lex.get(_norm_name(name), ()):
            hits.setdefault(j, {})["lex_exact"] = 1.0
    return hits


@dataclass
class _CodeFeatures:
    code: str
    cand: np.ndarray  # candidate concept indices
    feats: np.ndarray  # (n_cand, len(FEATURES))


def _features(ctx: _Context, codes: Sequence[str], batch_size: int = 256) -> list[_CodeFeatures]:
    """Candidates and their feature rows for each code."""
    out: list[_CodeFeatures] = []
    lg = ctx.lg
    for start in range(0, len(codes), batch_size):
        chunk = list(codes[start : start + batch_size])
        rows = torch.tensor([ctx.row[c] for c in chunk], dtype=torch.long)
        with torch.no_grad():
            t_name, t_node = ctx.text_scores(rows)
            raw = ctx.zq[rows] @ ctx.zk.T
            # scale-free graph score: standardised over all candidates of the code
            g = (raw - raw.mean(1, keepdim=True)) / raw.std(1, keepdim=True).clamp_min(1e-6)
        k_text = min(ctx.top_text, t_name.size(1))
        has_graph = bool(ctx.zk.abs().sum() > 0)
        k_gnn = min(ctx.top_gnn, g.size(1)) if has_graph else 0
        top_t = t_name.topk(k_text, dim=1).indices.numpy()
        top_g = g.topk(k_gnn, dim=1).indices.numpy()
        t_best = t_name.max(1).values
        g_best = g.max(1).values
        t_name_np, t_node_np, g_np = t_name.numpy(), t_node.numpy(), g.numpy()
        if not has_graph:
            g_np = np.zeros_like(g_np)
            g_best = torch.zeros_like(g_best)
        cands: list[np.ndarray] = []
        all_hits: list[dict[int, dict[str, float]]] = []
        for b, code in enumerate(chunk):
            hits = _path_hits(ctx, code)
            base = np.union1d(top_t[b], top_g[b])
            in_base = set(base.tolist())
            extra = [j for j in hits if j not in in_base]
            if len(extra) > ctx.max_path:  # keep the strongest path hits (a code may reach hundreds)
                extra.sort(key=lambda j: (-(sum(hits[j].values()) + float(t_name_np[b, j])), j))
                extra = extra[: ctx.max_path]
            cands.append(np.union1d(base, np.array(extra, dtype=np.int64)))
            all_hits.append(hits)
        t_ranks = _rank_feature(t_name, cands)
        g_ranks = _rank_feature(g, cands) if has_graph else [np.zeros(len(c), np.float32) for c in cands]
        for b, code in enumerate(chunk):
            cand, hits = cands[b], all_hits[b]
            f = np.zeros((len(cand), len(FEATURES)), dtype=np.float32)
            f[:, _F["text_name"]] = t_name_np[b, cand]
            f[:, _F["text_node"]] = t_node_np[b, cand]
            f[:, _F["text_rank"]] = t_ranks[b]
            f[:, _F["text_margin"]] = t_name_np[b, cand] - float(t_best[b])
            f[:, _F["gnn"]] = g_np[b, cand]
            f[:, _F["gnn_rank"]] = g_ranks[b]
            f[:, _F["gnn_margin"]] = g_np[b, cand] - float(g_best[b])
            for i, j in enumerate(cand):
                slot = hits.get(int(j))
                if slot:
                    for key, value in slot.items():
                        f[i, _F[key]] = value
            for key in ("gem", "gem_eq"):
                f[:, _F[key]] = np.log1p(f[:, _F[key]])
            deg = ctx.static[cand, 0].copy()
            own = lg.code_links.get(code)
            if own:
                deg -= np.array(
                    [1.0 if code in ctx.cluster_codes[j] else 0.0 for j in cand], dtype=np.float32
                )
            f[:, _F["concept_degree"]] = np.log1p(np.maximum(deg, 0.0))
            f[:, _F["concept_nsct"]] = ctx.static[cand, 1]
            f[:, _F["is_mondo"]] = ctx.static[cand, 2]
            out.append(_CodeFeatures(code, cand, f))
    return out


# ---------------------------------------------------------------------- training


@dataclass
class PredictorConfig:
    """Hyperparameters of :func:`train_predictor` (all recorded in ``config.json``).

    Attributes:
        gnn: graph-encoder registry name (``"rgcn"``; any registered graph encoder with the same constructor).
        gnn_kwargs: its constructor arguments besides ``in_dim`` / ``num_relations``.
        gnn_epochs: full-batch epochs of link-prediction training.
        gnn_lr: Adam learning rate of the graph encoder.
        gnn_weight_decay: Adam weight decay.
        gnn_negatives: random candidate concepts per epoch, shared by all codes (sampled softmax).
        gnn_hard_negatives: most text-similar wrong concepts per code, always in its softmax.
        pca_dim: principal components of the text vectors fed to the encoder.
        folds: cross-fitting folds (one graph encoder and one reranker per fold).
        top_text: text candidates per code.
        top_gnn: graph candidates per code.
        reranker_hidden: reranker width.
        reranker_epochs: full-batch reranker epochs.
        reranker_lr: reranker learning rate.
        target_precision: out-of-fold precision the threshold is chosen for.
        use_gnn: ``False``: no graph encoder; its score features are zero (ablation).
        drop_features: names of :data:`FEATURES` zeroed everywhere. Default: ``concept_degree``
            (how many other codes link the concept): in the held-out evaluation the true concept
            has usually lost its only link, so "no other code links it" is a giveaway (94% of
            true concepts link no other code) that does not carry over to codes that never had
            a link; dropping it costs nothing measurable (Hits@1 0.910 -> 0.908, seed 0).
    """

    gnn: str = "rgcn"
    gnn_kwargs: dict[str, Any] = field(
        default_factory=lambda: {
            "hidden_dim": 64,
            "out_dim": 64,
            "num_layers": 2,
            "num_bases": 4,
            "dropout": 0.1,
        }
    )
    gnn_epochs: int = 100
    gnn_lr: float = 5e-3
    gnn_weight_decay: float = 1e-5
    gnn_negatives: int = 2048
    gnn_hard_negatives: int = 16
    pca_dim: int = 64
    folds: int = 3
    top_text: int = 40
    top_gnn: int = 40
    reranker_hidden: int = 32
    reranker_epochs: int = 200
    reranker_lr: float = 1e-2
    target_precision: float = 0.9
    use_gnn: bool = True
    drop_features: tuple[str, ...] = ("concept_degree",)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}
        out["drop_features"] = list(self.drop_features)
        return out


def _masked_columns(config: PredictorConfig) -> list[int]:
    names = set(config.drop_features)
    unknown = names - set(FEATURES)
    if unknown:
        raise ValueError(f"unknown feature(s) {sorted(unknown)}: known are {', '.join(FEATURES)}")
    if not config.use_gnn:
        names |= {"gnn", "gnn_rank", "gnn_margin"}
    return sorted(_F[n] for n in names)


def _build_gnn(config: PredictorConfig, in_dim: int) -> nn.Module:
    import gnn.rgcn  # noqa: F401  (registers "rgcn")
    from gnn.registry import gnn_registry

    return gnn_registry.resolve(
        config.gnn, in_dim=in_dim, num_relations=2 * len(GNN_RELATIONS), **config.gnn_kwargs
    )


def _node_systems(lg: LinkGraph) -> Tensor:
    """System id (index into :data:`GNN_SYSTEMS`) of every node ``(num_nodes,)``."""
    sys_idx = {s: i for i, s in enumerate(GNN_SYSTEMS)}
    return torch.tensor([sys_idx[n.partition(":")[0]] for n in lg.ids], dtype=torch.long)


@dataclass
class _GnnData:
    """The encoder's training subgraph: the 2-hop neighbourhood of the codes and candidates.

    With a 2-layer encoder the embeddings of the seed nodes computed on this subgraph equal
    those computed on the whole graph, at a third of the nodes and edges.
    """

    x: Tensor
    edge_index: Tensor
    edge_type: Tensor
    local: Tensor  # global row -> subgraph row (-1 outside)
    concept_rows: Tensor  # candidate concepts, subgraph rows


def _gnn_data(x_all: Tensor, ctx: _Context, seeds: Sequence[str], hops: int) -> _GnnData:
    from torch_geometric.utils import k_hop_subgraph

    edge_index, edge_type = ctx.lg.tensors()
    seed_rows = torch.cat([torch.tensor([ctx.row[c] for c in seeds], dtype=torch.long), ctx.concept_rows])
    subset, sub_ei, _, emask = k_hop_subgraph(
        seed_rows.unique(), hops, edge_index, relabel_nodes=True, num_nodes=x_all.size(0)
    )
    local = torch.full((x_all.size(0),), -1, dtype=torch.long)
    local[subset] = torch.arange(subset.numel())
    logger.debug("encoder subgraph: %d nodes, %d edges", subset.numel(), sub_ei.size(1))
    return _GnnData(x_all[subset], sub_ei, edge_type[emask], local, local[ctx.concept_rows])


def _hard_negatives(ctx: _Context, codes: Sequence[str], positives: dict[str, list[int]], k: int) -> Tensor:
    """The ``k`` most text-similar non-positive candidate concepts of each code ``(len(codes), k)``."""
    out = torch.zeros(len(codes), k, dtype=torch.long)
    for start in range(0, len(codes), 512):
        chunk = codes[start : start + 512]
        rows = torch.tensor([ctx.row[c] for c in chunk], dtype=torch.long)
        by_name, _ = ctx.text_scores(rows)
        for i, c in enumerate(chunk):
            by_name[i, positives[c]] = -2.0
        out[start : start + len(chunk)] = by_name.topk(k, dim=1).indices
    return out


def _train_gnn(
    scorer: LinkScorer,
    data: _GnnData,
    ctx: _Context,
    codes: Sequence[str],
    positives: dict[str, list[int]],
    hard: Tensor,
    config: PredictorConfig,
    seed: int,
    desc: str,
    progress: bool | None,
) -> None:
    """Train one scorer on ``codes``: sampled softmax over positives, the code's text-similar
    hard negatives and ``config.gnn_negatives`` random candidates (shared by all codes)."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    scorer.reset_parameters()
    opt = torch.optim.Adam(scorer.parameters(), lr=config.gnn_lr, weight_decay=config.gnn_weight_decay)
    rows = data.local[torch.tensor([ctx.row[c] for c in codes], dtype=torch.long)]
    n_pos = max(len(positives[c]) for c in codes)
    pos_idx = torch.zeros(len(codes), n_pos, dtype=torch.long)
    pos_ok = torch.zeros(len(codes), n_pos, dtype=torch.bool)
    is_pos = torch.zeros(len(codes), len(ctx.concepts), dtype=torch.bool)
    for i, c in enumerate(codes):
        p = positives[c]
        pos_idx[i, : len(p)] = torch.tensor(p)
        pos_ok[i, : len(p)] = True
        is_pos[i, p] = True
    n_neg = min(config.gnn_negatives, len(ctx.concepts))
    bar = tqdm(range(config.gnn_epochs), desc=desc, unit="epoch", disable=not _show(progress), leave=False)
    scorer.train()
    for _ in bar:
        opt.zero_grad()
        z = scorer.encode(data.x, data.edge_index, data.edge_type)
        zc = scorer.query(z[rows])
        zk = z[data.concept_rows]
        shared = torch.randperm(len(ctx.concepts), generator=gen)[:n_neg]
        l_pos = torch.einsum("bd,bkd->bk", zc, zk[pos_idx]).masked_fill(~pos_ok, float("-inf"))
        l_hard = torch.einsum("bd,bkd->bk", zc, zk[hard])
        l_shared = (zc @ zk[shared].T).masked_fill(is_pos[:, shared], float("-inf"))
        logits = torch.cat([l_pos, l_hard, l_shared], dim=1)
        loss = (logits.logsumexp(-1) - l_pos.logsumexp(-1)).mean()
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    scorer.eval()


def _embed_all(scorer: LinkScorer, x_all: Tensor, lg: LinkGraph) -> Tensor:
    """Embeddings of every node of the link graph (one full-graph pass, no gradients)."""
    edge_index, edge_type = lg.tensors()
    with torch.no_grad():
        return scorer.encode(x_all, edge_index, edge_type)


def _pack(
    feats: Sequence[_CodeFeatures], positives: dict[str, list[int]] | None
) -> tuple[Tensor, Tensor, Tensor]:
    """All candidates of all codes in one matrix: ``(features, code index, is positive)``."""
    x = torch.from_numpy(np.concatenate([f.feats for f in feats])) if feats else torch.zeros(0, len(FEATURES))
    seg = torch.repeat_interleave(torch.arange(len(feats)), torch.tensor([len(f.cand) for f in feats]))
    pos = torch.zeros(x.size(0), dtype=torch.bool)
    if positives is not None:
        flags = [np.isin(f.cand, positives.get(f.code, [])) for f in feats]
        pos = torch.from_numpy(np.concatenate(flags)) if flags else pos
    return x, seg, pos


def _segment_logsumexp(scores: Tensor, seg: Tensor, n: int) -> Tensor:
    """``logsumexp`` of ``scores`` within each segment ``(n,)`` (``-inf`` for an empty one)."""
    top = torch.full((n,), float("-inf")).scatter_reduce(0, seg, scores.detach(), "amax")
    safe = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    total = torch.zeros(n).index_add(0, seg, torch.exp(scores - safe[seg]))
    return torch.log(total) + safe


def _train_reranker(
    reranker: Reranker,
    feats: Sequence[_CodeFeatures],
    positives: dict[str, list[int]],
    config: PredictorConfig,
    seed: int,
) -> None:
    """Listwise training: softmax over each code's candidates, all its positives as the target."""
    torch.manual_seed(seed)
    for module in reranker.net:
        if isinstance(module, nn.Linear):
            module.reset_parameters()
    useful = [f for f in feats if np.isin(f.cand, positives.get(f.code, [])).any()]
    x, seg, pos = _pack(useful, positives)
    n = len(useful)
    reranker.fit_scaler(x)
    opt = torch.optim.Adam(reranker.net.parameters(), lr=config.reranker_lr, weight_decay=1e-4)
    reranker.train()
    for _ in range(config.reranker_epochs):
        opt.zero_grad()
        s = reranker(x)
        loss = (
            _segment_logsumexp(s, seg, n) - _segment_logsumexp(s.masked_fill(~pos, float("-inf")), seg, n)
        ).mean()
        loss.backward()
        opt.step()
    reranker.eval()


def _concept_scores(reranker: Reranker, feats: Sequence[_CodeFeatures]) -> list[np.ndarray]:
    """Reranker score of every candidate, per code."""
    if not feats:
        return []
    x, _, _ = _pack(feats, None)
    with torch.no_grad():
        s = reranker(x).numpy()
    bounds = np.cumsum([0, *(len(f.cand) for f in feats)])
    return [s[bounds[i] : bounds[i + 1]] for i in range(len(feats))]


def _sct_scores(ctx: _Context, f: _CodeFeatures, scores: np.ndarray) -> dict[str, tuple[float, str]]:
    """SNOMED CT id -> (best concept score, that concept)."""
    best: dict[str, tuple[float, str]] = {}
    scts = ctx.lg.concept_scts
    for j, s in zip(f.cand, scores, strict=True):
        concept = ctx.concepts[int(j)]
        for sct in scts[concept]:
            old = best.get(sct)
            if old is None or s > old[0] or (s == old[0] and concept < old[1]):
                best[sct] = (float(s), concept)
    return best


def _fit_calibration(score: np.ndarray, margin: np.ndarray, label: np.ndarray) -> list[float]:
    """Platt scaling ``sigmoid(a * score + b * margin + c)`` by L-BFGS (tiny L2)."""
    x = torch.tensor(np.stack([score, margin], 1), dtype=torch.float64)
    y = torch.tensor(label, dtype=torch.float64)
    w = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        logit = x[:, 0] * w[0] + x[:, 1] * w[1] + w[2]
        loss = F.binary_cross_entropy_with_logits(logit, y) + 1e-4 * (w[:2] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return [float(v) for v in w.detach()]


def _choose_threshold(prob: np.ndarray, label: np.ndarray, target: float) -> float:
    """The lowest score t with precision(score >= t) >= target (1.0 when none reaches it)."""
    order = np.argsort(-prob, kind="stable")
    p, y = prob[order], label[order]
    prec = np.cumsum(y) / np.arange(1, len(y) + 1)
    ok = np.nonzero(prec >= target)[0]
    if not len(ok):
        return 1.0
    i = int(ok[-1])
    while i + 1 < len(p) and p[i + 1] == p[i]:  # a threshold cannot split ties
        i += 1
    return float(p[i]) if prec[i] >= target else float(p[int(ok[-1])])


def _training_codes(
    lg: LinkGraph, ctx: _Context
) -> tuple[list[str], dict[str, list[int]], dict[str, set[str]]]:
    """ICD-10-CM codes with a link to a candidate concept, their positives and true SNOMED ids."""
    codes: list[str] = []
    positives: dict[str, list[int]] = {}
    truth: dict[str, set[str]] = {}
    for code, concepts in sorted(lg.code_links.items()):
        if not code.startswith("ICD10CM:") or lg.kinds.get(code) in _SKIP_KINDS or code not in ctx.row:
            continue
        pos = sorted(ctx.cidx[c] for c in concepts if c in ctx.cidx)
        if pos:
            codes.append(code)
            positives[code] = pos
            truth[code] = {s for c in concepts for s in lg.concept_scts.get(c, ())}
    return codes, positives, truth


def train_predictor(
    kg: KnowledgeGraph,
    *,
    holdout: Collection[str] = (),
    seed: int = 0,
    config: PredictorConfig | None = None,
    encoder: TextEncoder | None = None,
    embedding_cache: str | Path | None = "default",
    text_vectors: tuple[Tensor, Tensor, Tensor] | None = None,
    progress: bool | None = None,
) -> Predictor:
    """Train the link predictor on the known links of ``kg`` (except those into ``holdout``).

    Args:
        kg: the knowledge graph (read only; the predictor keeps its own stripped copy).
        holdout: ICD-10-CM codes whose cross-reference edges are removed before anything is
            computed (for evaluation).
        seed: seed of the folds and of every initialisation.
        config: hyperparameters (default :class:`PredictorConfig`).
        encoder: the text encoder (default: MiniLM, :func:`default_text_encoder`).
        embedding_cache: embedding cache folder; ``"default"`` means :func:`default_embedding_dir`,
            ``None`` no caching.
        text_vectors: precomputed ``(node_vecs, name_owner, name_vecs)`` for the link graph's
            ids and candidates (tests; skips the encoder).
        progress: show progress bars (default: when stderr is a terminal).

    Returns:
        The trained :class:`Predictor`.

    Raises:
        ValueError: the graph has no known link to learn from.
    """
    # a copy: the predictor's config may change later (refit_reranker), the caller's must not
    config = PredictorConfig(**config.to_dict()) if config is not None else PredictorConfig()
    config.drop_features = tuple(config.drop_features)
    t0 = time.perf_counter()
    lg = LinkGraph.from_kg(kg, exclude=holdout)
    if text_vectors is None:
        text_vectors = compute_text_vectors(
            kg, lg, encoder=encoder, embedding_cache=embedding_cache, progress=progress
        )
    node_vecs, name_owner, name_vecs = text_vectors
    t_text = time.perf_counter() - t0
    ctx = _Context(lg, node_vecs, name_owner, name_vecs, config.top_text, config.top_gnn)
    ctx.masked = _masked_columns(config)
    codes, positives, truth = _training_codes(lg, ctx)
    if not codes:
        raise ValueError("the graph has no ICD-10-CM code linked to a SNOMED CT id to learn from")
    text_dim = node_vecs.size(1)
    in_dim = config.pca_dim + len(GNN_SYSTEMS)
    rng = np.random.default_rng(seed)
    n_folds = max(1, config.folds) if len(codes) >= 2 * max(1, config.folds) else 1
    fold_of = {c: int(f) for c, f in zip(codes, rng.permutation(len(codes)) % n_folds, strict=True)}
    n_scorers = n_folds if config.use_gnn else 0
    model = SnomedLinkModel(
        [_build_gnn(config, in_dim) for _ in range(n_scorers)],
        text_dim,
        config.pca_dim,
        len(FEATURES),
        config.reranker_hidden,
        n_rerankers=n_folds,
    )
    model.fit_pca(node_vecs, seed=seed)
    x_all = model.inputs(node_vecs, _node_systems(lg))

    t1 = time.perf_counter()
    data = None
    if n_scorers:
        hops = int(getattr(model.scorers[0].gnn, "num_layers", 2))
        data = _gnn_data(x_all, ctx, codes, hops)
        hard = _hard_negatives(ctx, codes, positives, config.gnn_hard_negatives)
        hard_of = {c: hard[i] for i, c in enumerate(codes)}
    logger.info(
        "predictor: %d training codes, %d candidate concepts; encoder subgraph %s (%.0f s so far)",
        len(codes),
        len(ctx.concepts),
        f"{data.x.size(0):,} nodes / {data.edge_index.size(1):,} edges" if data is not None else "not used",
        time.perf_counter() - t0,
    )
    oof: list[_CodeFeatures] = []
    embeddings: list[Tensor] = []
    for k in range(n_folds):
        held = [c for c in codes if fold_of[c] == k] if n_folds > 1 else codes
        if n_scorers and data is not None:
            scorer = model.scorers[k]
            train = [c for c in codes if fold_of[c] != k] if n_folds > 1 else codes
            hard_k = torch.stack([hard_of[c] for c in train])
            desc = f"gnn fold {k + 1}/{n_folds}"
            _train_gnn(scorer, data, ctx, train, positives, hard_k, config, seed + 1 + k, desc, progress)
            embeddings.append(_embed_all(scorer, x_all, lg))
            with torch.no_grad():
                ctx.zq, ctx.zk = scorer.query(embeddings[-1]), embeddings[-1][ctx.concept_rows]
        oof += _features(ctx, held)
        logger.info("predictor: fold %d/%d done (%.0f s so far)", k + 1, n_folds, time.perf_counter() - t0)
    train_folds = fold_of if n_folds > 1 else {}
    if embeddings:
        ctx.zq, ctx.zk = _assigned(model.scorers, embeddings, lg.ids, train_folds, ctx.concept_rows)  # type: ignore[arg-type]
    t_gnn = time.perf_counter() - t1
    t2 = time.perf_counter()
    state = _TrainingState(oof, fold_of, n_folds, positives, truth)
    threshold, stats = _fit_reranker_stage(model, ctx, state, config, seed)
    card = {
        "trained": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seed": seed,
        "training_codes": len(codes),
        "holdout_codes": len(holdout),
        "training_data": {
            "description": "known ICD-10-CM -> SNOMED CT links through DO/Mondo cross-references "
            "(exact/dbxref), chapters and blocks left out; held-out codes' cross-references removed",
            "kg_sources": lg.sources,
            "training_links": int(sum(len(v) for v in truth.values())),
            "candidate_concepts": len(ctx.concepts),
            "candidate_snomed_ids": len({s for c in ctx.concepts for s in lg.concept_scts[c]}),
            "graph_nodes": len(lg.ids),
            "graph_edges": int(lg.edge_index.shape[1]),
        },
        "metrics_note": "oof_*: out-of-fold (cross-fitted) on the training codes; held-out-code "
        "metrics of the same recipe are in bench/results/map.json",
        "folds": n_folds,
        "threshold": threshold,
        "target_precision": config.target_precision,
        **stats,
        "seconds": {
            "text": round(t_text, 1),
            "gnn": round(t_gnn, 1),
            "reranker": round(time.perf_counter() - t2, 1),
        },
    }
    logger.info(
        "trained SNOMED CT link predictor on %d codes in %.0f s (threshold %.3f)",
        len(codes),
        time.perf_counter() - t0,
        threshold,
    )
    predictor = Predictor(model, lg, ctx, config, threshold=threshold, card=card, folds=train_folds)
    predictor._training = state
    return predictor


@dataclass
class _TrainingState:
    """What the reranker stage needs (kept in memory by a freshly trained predictor)."""

    oof: list[_CodeFeatures]
    fold_of: dict[str, int]
    n_folds: int
    positives: dict[str, list[int]]
    truth: dict[str, set[str]]


def _fit_reranker_stage(
    model: SnomedLinkModel, ctx: _Context, state: _TrainingState, config: PredictorConfig, seed: int
) -> tuple[float, dict[str, Any]]:
    """One reranker per fold; their out-of-fold scores -> Platt calibration and threshold."""
    masked = ctx.masked
    oof = [_CodeFeatures(f.code, f.cand, _mask(f.feats, masked)) for f in state.oof]
    by_fold: dict[int, list[_CodeFeatures]] = {}
    for f in oof:
        by_fold.setdefault(state.fold_of[f.code] if state.n_folds > 1 else 0, []).append(f)
    scores_oof: dict[str, np.ndarray] = {}
    for k, held in sorted(by_fold.items()):
        rest = [f for kk, fs in by_fold.items() if kk != k for f in fs] or held
        reranker = model.rerankers[k]
        _train_reranker(reranker, rest, state.positives, config, seed + 100 + k)  # type: ignore[arg-type]
        for f, sc in zip(held, _concept_scores(reranker, held), strict=True):  # type: ignore[arg-type]
            scores_oof[f.code] = sc
    cal_score, cal_margin, cal_label = [], [], []
    ranks: list[int] = []  # rank of the best-ranked true SNOMED CT id per code (0: not a candidate)
    for f in oof:
        best = _sct_scores(ctx, f, scores_oof[f.code])
        top = max(v[0] for v in best.values())
        ordered = sorted(best, key=lambda k: (-best[k][0], k))
        true_ranks = [i + 1 for i, k in enumerate(ordered) if k in state.truth[f.code]]
        ranks.append(min(true_ranks) if true_ranks else 0)
        for sct, (sc, _) in best.items():
            cal_score.append(sc)
            cal_margin.append(sc - top)
            cal_label.append(1.0 if sct in state.truth[f.code] else 0.0)
    calib = _fit_calibration(np.array(cal_score), np.array(cal_margin), np.array(cal_label))
    model.calib.copy_(torch.tensor(calib))
    score_t = torch.tensor(cal_score)
    probs = model.calibrate(score_t, score_t - torch.tensor(cal_margin)).numpy()
    labels = np.array(cal_label)
    threshold = _choose_threshold(probs, labels, config.target_precision)
    above = probs >= threshold
    r = np.array(ranks)
    n_codes = max(1, len(r))
    stats = {
        "oof_ranking": {
            "codes": int(len(r)),
            **{f"hits@{k}": round(float(((r > 0) & (r <= k)).sum() / n_codes), 4) for k in (1, 5, 10)},
            "mrr": round(float(np.where(r > 0, 1.0 / np.maximum(r, 1), 0.0).sum() / n_codes), 4),
        },
        "calibration": [round(v, 4) for v in calib],
        "oof_pairs_above_threshold": int(above.sum()),
        "oof_precision_at_threshold": float(labels[above].mean()) if above.any() else None,
        "oof_recall_at_threshold": float(labels[above].sum() / max(1.0, labels.sum())),
        "oof_brier": float(np.mean((probs - labels) ** 2)),
    }
    return threshold, stats


def _mask(feats: np.ndarray, columns: Sequence[int]) -> np.ndarray:
    if not len(columns):
        return feats
    out = feats.copy()
    out[:, list(columns)] = 0.0
    return out


def compute_text_vectors(
    kg: KnowledgeGraph,
    lg: LinkGraph,
    *,
    encoder: TextEncoder | None = None,
    embedding_cache: str | Path | None = "default",
    progress: bool | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The text vectors the predictor needs: node texts of ``lg.ids`` and candidate names.

    Returns:
        ``(node_vecs, name_owner, name_vecs)``: node text vectors in ``lg.ids`` order (zero rows
        for SNOMED CT ids), and one vector per name of each candidate concept with the index
        of its concept in ``lg.candidates``.

    Shapes:
        - node_vecs: ``(len(lg.ids), dim)``
        - name_owner: ``(num_names,)``
        - name_vecs: ``(num_names, dim)``
    """
    encoder = encoder or default_text_encoder()
    cache = default_embedding_dir() if embedding_cache == "default" else embedding_cache
    ids = [n for n in lg.ids if not n.startswith("SCTID:")]
    threads = torch.get_num_threads()  # loading a Hugging Face encoder resets them
    try:
        vecs = embed_node_texts(kg, ids, encoder, cache, show_progress_bar=_show(progress))
        owner, name_vecs = embed_names(kg, lg.candidates, encoder, cache, show_progress_bar=_show(progress))
    finally:
        torch.set_num_threads(threads)
    node_vecs = torch.zeros(len(lg.ids), vecs.size(1))
    node_vecs[: len(ids)] = vecs  # SCTID rows come last in lg.ids
    assert all(n.startswith("SCTID:") for n in lg.ids[len(ids) :])
    return node_vecs, owner, name_vecs


# ---------------------------------------------------------------------- the predictor


def _versions() -> dict[str, str]:
    from kgcode import __version__

    out = {"kgcode": __version__, "torch": torch.__version__}
    try:
        import torch_geometric

        out["torch_geometric"] = torch_geometric.__version__
    except ImportError:  # pragma: no cover
        pass
    return out


class Predictor:
    """A trained ICD-10-CM -> SNOMED CT link predictor.

    Built by :func:`train_predictor` or :meth:`load`; it holds its own :class:`LinkGraph`
    (never the caller's KG object), so changing the KG afterwards does not change predictions.

    Attributes:
        threshold: calibrated score above which a link is reported as likely (chosen for
            out-of-fold precision >= ``config.target_precision``).
        card: the model card (training data, metrics, timings).
    """

    def __init__(
        self,
        model: SnomedLinkModel,
        lg: LinkGraph,
        ctx: _Context,
        config: PredictorConfig,
        *,
        threshold: float,
        card: dict[str, Any],
        folds: dict[str, int] | None = None,
    ) -> None:
        self.model = model.eval()
        self.folds = dict(folds or {})
        self.lg = lg
        self.ctx = ctx
        self.config = config
        self.threshold = threshold
        self.card = card
        self._training: _TrainingState | None = None

    def refit_reranker(self, drop_features: Sequence[str] = ()) -> Predictor:
        """Retrain reranker, calibration and threshold with some features zeroed (ablations).

        Only for a predictor fresh from :func:`train_predictor` (the out-of-fold features are
        kept in memory, not saved). The graph encoder is unchanged.

        Args:
            drop_features: names of :data:`FEATURES` to zero.

        Returns:
            ``self``.
        """
        if self._training is None:
            raise ValueError("refit_reranker needs a predictor fresh from train_predictor")
        trial = PredictorConfig(**{**self.config.to_dict(), "drop_features": tuple(drop_features)})
        masked = _masked_columns(trial)  # raises on an unknown name, before anything changes
        self.config.drop_features = tuple(drop_features)
        self.ctx.masked = masked
        self.threshold, stats = _fit_reranker_stage(
            self.model, self.ctx, self._training, self.config, int(self.card.get("seed", 0))
        )
        self.card.update(stats, threshold=self.threshold)
        return self

    # ---------------------------------------------------------------- prediction

    def predict(self, icd_id: str, top_k: int = 5) -> list[dict[str, Any]]:
        """The most likely SNOMED CT ids of one ICD-10-CM code.

        The code's own cross-references are never used (a code with exact links gets the
        prediction it would get without them).

        Args:
            icd_id: the code in any spelling (``E11.9``, ``ICD10CM:E11.9``).
            top_k: the most results.

        Returns:
            Up to ``top_k`` dicts, best first: ``target`` (``SCTID:...``), ``score`` (calibrated
            probability), ``via`` (the DO/Mondo concept carrying the id) and ``via_label`` (its
            label). Empty for a code the predictor does not know or another system's code.
        """
        return self.predict_many([icd_id], top_k=top_k).get(self._resolve(icd_id) or icd_id, [])

    def predict_many(
        self, icd_ids: Iterable[str], top_k: int = 5, *, progress: bool | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        """:meth:`predict` for many codes at once (batched; much faster per code).

        Args:
            icd_ids: codes in any spelling.
            top_k: the most results per code.
            progress: show a progress bar.

        Returns:
            ``{resolved code id: results}`` for every code (unknown codes map to ``[]``, under
            their resolved id when they could be read, else as given).
        """
        from tqdm.auto import tqdm

        out: dict[str, list[dict[str, Any]]] = {}
        known: list[str] = []
        for raw in icd_ids:
            code = self._resolve(raw)
            if code is None or code not in self.ctx.row or not code.startswith("ICD10CM:"):
                out[code or raw] = []
            else:
                out[code] = []
                known.append(code)
        known = list(dict.fromkeys(known))
        step = 512
        bar = tqdm(
            total=len(known), desc="predict", unit="code", disable=not _show(progress) or len(known) < step
        )
        for start in range(0, len(known), step):
            chunk = known[start : start + step]
            for code, ranked in zip(chunk, self._rank(chunk), strict=True):
                out[code] = [{**r, "score": round(r["score"], 4)} for r in ranked[: max(0, top_k)]]
            bar.update(len(chunk))
        bar.close()
        return out

    def _resolve(self, raw: str) -> str | None:
        from ontologies.codes import try_standardize

        return try_standardize(raw, "ICD10CM") if isinstance(raw, str) else None

    def _rank(self, codes: Sequence[str]) -> list[list[dict[str, Any]]]:
        feats = [
            _CodeFeatures(f.code, f.cand, _mask(f.feats, self.ctx.masked)) for f in _features(self.ctx, codes)
        ]
        results = []
        n_rr = len(self.model.rerankers)
        by_reranker: dict[int, list[int]] = {}
        for i, f in enumerate(feats):
            by_reranker.setdefault(_scorer_of(f.code, n_rr, self.folds), []).append(i)
        all_scores: list[np.ndarray] = [np.zeros(0)] * len(feats)
        for k, idx in by_reranker.items():
            for i, sc in zip(
                idx, _concept_scores(self.model.rerankers[k], [feats[i] for i in idx]), strict=True
            ):  # type: ignore[arg-type]
                all_scores[i] = sc
        for f, s in zip(feats, all_scores, strict=True):
            best = _sct_scores(self.ctx, f, s)
            if not best:
                results.append([])
                continue
            scts = list(best)
            raw = torch.tensor([best[k][0] for k in scts])
            probs = self.model.calibrate(raw, raw.max().expand_as(raw)).numpy()
            order = sorted(range(len(scts)), key=lambda i: (-probs[i], -raw[i].item(), scts[i]))
            titles = self.lg.titles
            results.append(
                [
                    {
                        "target": scts[i],
                        "score": float(probs[i]),
                        "via": best[scts[i]][1],
                        "via_label": titles.get(best[scts[i]][1], ""),
                    }
                    for i in order
                ]
            )
        return results

    def sct_scores(self, codes: Sequence[str]) -> list[dict[str, float]]:
        """Calibrated score of every candidate SNOMED CT id per code (for evaluation).

        Ids outside a code's candidate set are absent (score 0).
        """
        return [{r["target"]: r["score"] for r in ranked} for ranked in self._rank(codes)]

    def gnn_sct_scores(self, codes: Sequence[str]) -> list[dict[str, float]]:
        """The graph encoder's DistMult score alone, max over carriers, per code (ablation)."""
        ctx = self.ctx
        out: list[dict[str, float]] = []
        for start in range(0, len(codes), 256):
            chunk = codes[start : start + 256]
            rows = torch.tensor([ctx.row[c] for c in chunk], dtype=torch.long)
            with torch.no_grad():
                g = (ctx.zq[rows] @ ctx.zk.T).numpy()
            for row in g:
                scores: dict[str, float] = {}
                for j, concept in enumerate(ctx.concepts):
                    v = float(row[j])
                    for sct in self.lg.concept_scts[concept]:
                        if v > scores.get(sct, float("-inf")):
                            scores[sct] = v
                out.append(scores)
        return out

    # ---------------------------------------------------------------- saving

    def save(self, path: str | Path) -> Path:
        """Write the predictor folder atomically (a new folder swapped in by renames).

        Args:
            path: the folder (created or replaced).

        Returns:
            The folder.
        """
        from safetensors.torch import save_file

        from kg.store import atomic_folder, write_json_atomic

        target = Path(path)
        if target.exists() and not (target / "config.json").is_file() and any(target.iterdir()):
            raise FileExistsError(f"{target} exists and is not a predictor folder: refusing to replace it")
        with atomic_folder(target) as tmp:
            state = {k: v.detach().contiguous() for k, v in self.model.state_dict().items()}
            save_file(state, str(tmp / "model.safetensors"), metadata={"format": FORMAT})
            ctx = self.ctx
            code_rows = torch.tensor([i for i, n in enumerate(self.lg.ids) if n.startswith("ICD10CM:")])
            save_file(
                {
                    "zq": ctx.zq[code_rows].half().contiguous(),
                    "zk": ctx.zk.half().contiguous(),
                    "code_rows": code_rows,
                    "code_vecs": ctx.node_vecs[code_rows].half().contiguous(),
                    "concept_vecs": ctx.concept_node_vecs.half().contiguous(),
                    "name_owner": ctx.name_owner.contiguous(),
                    "name_vecs": ctx.name_vecs.half().contiguous(),
                },
                str(tmp / "embeddings.safetensors"),
                metadata={"format": FORMAT},
            )
            write_json_atomic(
                tmp / "index.json",
                {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "node_ids": self.lg.ids,
                    "concepts": ctx.concepts,
                    "training_folds": self.folds,
                },
            )
            gnn_config = (
                self.model.scorers[0].gnn.get_config()  # type: ignore[operator]
                if len(self.model.scorers)
                else {"name": self.config.gnn, **self.config.gnn_kwargs}
            )
            write_json_atomic(
                tmp / "config.json",
                {
                    "format": FORMAT,
                    "format_version": FORMAT_VERSION,
                    "versions": _versions(),
                    "kg_sources": self.lg.sources,
                    "gnn": gnn_config,
                    "n_scorers": len(self.model.scorers),
                    "n_rerankers": len(self.model.rerankers),
                    "features": list(FEATURES),
                    "text_dim": int(self.ctx.node_vecs.size(1)),
                    "predictor": self.config.to_dict(),
                    "threshold": self.threshold,
                    "text_encoder": {
                        "name": "hf",
                        "model": "all-MiniLM-L6-v2",
                        "max_length": TEXT_MAX_LENGTH,
                    },
                },
            )
            write_json_atomic(tmp / "model_card.json", self.card)
        return target

    @classmethod
    def load(cls, path: str | Path, kg: KnowledgeGraph) -> Predictor:
        """Load a predictor folder written by :meth:`save`.

        Args:
            path: the folder.
            kg: the knowledge graph to read paths from (its own links are used for every
                code but the one predicted; the stored embeddings are reused when its nodes are
                those the predictor was trained on, else recomputed).

        Returns:
            The predictor.

        Raises:
            PredictorFormatError: a file is missing, or the folder is of another format version.
        """
        from safetensors.torch import load_file

        folder = Path(path)
        files = (
            "config.json",
            "model.safetensors",
            "index.json",
            "embeddings.safetensors",
            "model_card.json",
        )
        for name in files:
            if not (folder / name).is_file():
                raise PredictorFormatError(
                    folder / name, f"missing: a predictor folder has {', '.join(files)}"
                )
        try:
            cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
            card = json.loads((folder / "model_card.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise PredictorFormatError(folder, f"unreadable JSON: {exc}") from None
        if cfg.get("format") != FORMAT or cfg.get("format_version") != FORMAT_VERSION:
            raise PredictorFormatError(
                folder / "config.json",
                f"format {cfg.get('format')!r} version {cfg.get('format_version')}, this kgcode reads "
                f"{FORMAT!r} version {FORMAT_VERSION}: retrain with `kgcode train-linker`",
            )
        if cfg.get("features") != list(FEATURES):
            raise PredictorFormatError(folder / "config.json", "feature list differs from this kgcode's")
        known = set(PredictorConfig().__dict__)
        config = PredictorConfig(**{k: v for k, v in cfg["predictor"].items() if k in known})
        config.drop_features = tuple(config.drop_features)
        gnn_cfg = dict(cfg["gnn"])
        gnn_cfg.pop("name", None)
        config.gnn = cfg["gnn"].get("name", config.gnn)
        import gnn.rgcn  # noqa: F401
        from gnn.registry import gnn_registry

        text_dim = int(cfg.get("text_dim", 384))
        gnn_cls = gnn_registry.get(config.gnn)
        gnns = [gnn_cls(**gnn_cfg) for _ in range(int(cfg.get("n_scorers", 1)))]
        model = SnomedLinkModel(
            gnns,
            text_dim,
            config.pca_dim,
            len(FEATURES),
            config.reranker_hidden,
            n_rerankers=int(cfg.get("n_rerankers", 1)),
        )
        try:
            model.load_state_dict(load_file(str(folder / "model.safetensors")))
        except Exception as exc:  # safetensors' own error type, or a state_dict mismatch
            raise PredictorFormatError(folder / "model.safetensors", _one_line(exc)) from None
        model.eval()
        try:
            emb = load_file(str(folder / "embeddings.safetensors"))
        except Exception as exc:
            raise PredictorFormatError(folder / "embeddings.safetensors", _one_line(exc)) from None
        missing = {"zq", "zk", "code_rows", "code_vecs", "concept_vecs", "name_owner", "name_vecs"} - set(emb)
        if missing:
            raise PredictorFormatError(
                folder / "embeddings.safetensors", f"missing tensors: {', '.join(sorted(missing))}"
            )
        if not isinstance(index.get("node_ids"), list) or not isinstance(index.get("concepts"), list):
            raise PredictorFormatError(folder / "index.json", "no node_ids / concepts lists")
        lg = LinkGraph.from_kg(kg)
        same = lg.ids == index["node_ids"] and lg.candidates == index["concepts"]
        if same:
            node_vecs = torch.zeros(len(lg.ids), emb["code_vecs"].size(1))
            node_vecs[emb["code_rows"]] = emb["code_vecs"].float()
            ctx = _Context(
                lg, node_vecs, emb["name_owner"], emb["name_vecs"].float(), config.top_text, config.top_gnn
            )
            ctx.concept_node_vecs = emb["concept_vecs"].float()
            ctx.zq = torch.zeros(len(lg.ids), emb["zq"].size(1))
            ctx.zq[emb["code_rows"]] = emb["zq"].float()
            ctx.zk = emb["zk"].float()
        else:
            logger.warning(
                "the KG differs from the one the predictor was trained on: recomputing text and graph "
                "embeddings (slow the first time)"
            )
            node_vecs, owner, name_vecs = compute_text_vectors(kg, lg)
            ctx = _Context(lg, node_vecs, owner, name_vecs, config.top_text, config.top_gnn)
            if len(model.scorers):
                x_all = model.inputs(node_vecs, _node_systems(lg))
                zs = [_embed_all(scorer, x_all, lg) for scorer in model.scorers]
                ctx.zq, ctx.zk = _assigned(
                    model.scorers,  # type: ignore[arg-type]
                    zs,
                    lg.ids,
                    index.get("training_folds") or {},
                    ctx.concept_rows,
                )
        ctx.masked = _masked_columns(config)
        folds = index.get("training_folds") or {}
        return cls(model, lg, ctx, config, threshold=float(cfg["threshold"]), card=card, folds=folds)


def load_default_predictor(kg: KnowledgeGraph) -> Predictor | None:
    """The predictor saved by ``kgcode train-linker`` in :func:`default_predictor_dir`, if any.

    Args:
        kg: the knowledge graph.

    Returns:
        The predictor, or ``None`` when none was trained (or it cannot be read: logged).
    """
    folder = default_predictor_dir()
    if not (folder / "config.json").is_file():
        return None
    try:
        return Predictor.load(folder, kg)
    except (PredictorFormatError, KeyError, RuntimeError, ValueError, OSError) as exc:
        logger.warning("cannot load the SNOMED CT link predictor at %s: %s", folder, exc)
        return None
