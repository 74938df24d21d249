"""The coder: a text encoder, a graph encoder and a label-attention fusion head that rank ICD-10-CM codes.

A :class:`Coder` scores every code of its label set (by default every ICD-10-CM category, code and
extension of the KG: ~98,000, since CodiEsp gold includes non-leaf codes) for a note:

1. the **text encoder** (registry name + kwargs; frozen) cuts the note into sentences and encodes
   each (:meth:`text_encoder.base.TextEncoder.encode_segments_many`);
2. each code has a **text vector**, the encoder's embedding of :func:`kg.texts.node_text` (title;
   synonyms; parent titles), cached on disk once per encoder and ontology release
   (:func:`code_text_vectors`), and a **graph vector** from a graph encoder over the KG (default
   ``"rsign"``, :class:`RelationalSIGN`: parents, children, siblings, excludes, code-first /
   use-additional notes, GEM and DO/Mondo/SNOMED links), so a code without training notes still gets
   its neighbours' information;
3. the **fusion head** (default ``"hybrid_label_attention"``, see :mod:`fusion.label_attention`)
   uses the code vectors as queries over the sentences: ``a * zero_shot + b * supervised``. The
   zero-shot path (max cosine between sentence and code text) is kept as an explicit component and
   can be scored on its own (``part="zero_shot"``); the supervised path's code side is computed
   from text + graph, never from a free per-code embedding. Attention weights are the evidence;
4. a **dictionary match** (:mod:`fusion.lexicon`, ``CoderConfig.lexicon``): each code's titles and
   inclusion terms are looked up in the note's sentences; the share of the name found, times how
   often that code's matches were right in the training notes (:meth:`Coder.fit_lexicon`), is
   added to the logit with a weight tuned on dev (CodiEsp dev: MAP 0.335 -> 0.450);
5. a **frequency-aware offset** (``CoderConfig.unseen_bias``, tuned on dev by training) is added
   to the logits of codes without training notes: supervision on a few hundred notes teaches the
   head and the memory to prefer the codes they have seen, and without it an unseen code never
   reaches a note's top 10 (CodiEsp dev: unseen R@10 0.006 without, 0.03 with it, at no MAP cost).

Scoring all ~98,000 codes exactly is too slow, so each note's candidates come from a cheap first
stage: the **zero-shot maximum** (a code's best cosine between one of the note's sentences and one
of the code's names, each name embedded on its own: ``CoderConfig.zero_shot_names``,
:func:`code_name_vectors`) plus the memory and the dictionary term; the head scores the
``rerank_k`` best exactly, and a **candidate reranker** (:mod:`fusion.rerank`) rescores each note's
top codes and a pool of unseen codes from the same zero-shot maximum.

After training, :meth:`Coder.finalize` runs the graph encoder once over all labels and stores what
the head needs per code (the *code bank*, with the code names' vectors) as buffers; prediction
then needs neither the KG nor the embedding cache: scoring all codes is a few matrix products per
batch of notes.

A saved coder is a folder (written atomically: temporary folder, then renames):

``config.json``
    ``format`` / ``format_version``, kgcode and torch versions, the KG's format version and
    source versions (ontology releases), the registry **names** and kwargs of encoder, graph
    encoder and fusion head (never import paths), the coder options and the decision threshold.
``model.safetensors``
    the state dict of the graph encoder, the fusion head and the code bank (``bank.*``). The frozen
    pretrained text encoder is **not** stored: it is referenced by registry name and model path
    (``encoder.kwargs.model_path``; ``None`` = the bundled all-MiniLM-L6-v2) and rebuilt on load.
``label_index.json``
    the code of each output row (``codes``, and ``rows``: code -> row), titles and training counts.
``model_card.json``
    training data, dev metrics, threshold, seed, versions, timings.
``lexicon.json`` (when ``lexicon`` is on)
    the names of each code the dictionary match looks for (by code: readable, and editable to add
    a team's own synonyms), the word rule and stop words; the match counts from the training notes
    are ``lexicon.*`` tensors of ``model.safetensors``.

Example:
    >>> coder = Coder.load("model/")                       # doctest: +SKIP
    >>> coder.predict(["Type 2 diabetes with chest pain."], top_k=5)[0][0]["code"]  # doctest: +SKIP
    'ICD10CM:E11.9'
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import fusion.label_attention  # noqa: F401  (registers the label-attention heads)
from fusion.lexicon import Lexicon
from fusion.registry import fusion_registry
from fusion.rerank import FEATURES as RERANK_FEATURES
from fusion.rerank import (
    RELATION_FEATURES,
    LabelTable,
    RelationTable,
    TreeEnsemble,
    candidate_features,
    rerank_logits,
)
from gnn.base import GraphEncoder
from gnn.registry import gnn_registry
from gnn.rsign import RelationalSIGN
from text_encoder.base import Segments, TextEncoder
from text_encoder.hashing import HashingTextEncoder
from text_encoder.quantize import int8_linear
from text_encoder.registry import text_encoder_from_config, text_encoder_registry

if TYPE_CHECKING:
    from kg.graph import KnowledgeGraph

__all__ = [
    "CODER_FILES",
    "FORMAT",
    "FORMAT_VERSION",
    "INFERENCE_BACKENDS",
    "INFERENCE_DTYPES",
    "LEXICON_FILE",
    "READABLE_FORMAT_VERSIONS",
    "Coder",
    "CoderConfig",
    "CoderFormatError",
    "GraphInputs",
    "HashingTextEncoder",
    "InvalidNoteError",
    "MemoryScorer",
    "RelationalSIGN",
    "ScoringInputs",
    "check_note",
    "code_text_vectors",
    "graph_inputs",
    "label_codes",
    "map_gold_codes",
    "native_bf16",
    "neighbourhood_labels",
    "resolve_inference_backend",
    "resolve_inference_dtype",
]

logger = logging.getLogger(__name__)
_C = TypeVar("_C")

FORMAT = "kgcode-coder"
#: Version of the saved folder layout written now (2: optional ``lexicon.json``; 3: optional
#: candidate reranker, ``reranker.*`` arrays in ``model.safetensors``; 4: the reranker may read the
#: knowledge graph's relations, ``relations.*`` arrays; 5: the zero-shot maximum may read each
#: code's names, ``bank.names`` / ``bank.name_owner``).
FORMAT_VERSION = 5
#: Versions :meth:`Coder.load` reads (a version-1 folder has no lexicon, 1 and 2 no reranker, 1-3
#: no relation features, 1-4 no code names).
READABLE_FORMAT_VERSIONS = (1, 2, 3, 4, 5)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
LABELS_FILE = "label_index.json"
CARD_FILE = "model_card.json"
CODER_FILES = (CONFIG_FILE, WEIGHTS_FILE, LABELS_FILE, CARD_FILE)
LEXICON_FILE = "lexicon.json"

#: Notes longer than this many characters are truncated (with a warning) before encoding.
MAX_NOTE_CHARS = 50_000


_LETTER = re.compile(r"[^\W\d_]")


class CoderFormatError(ValueError):
    """A coder folder that cannot be loaded: a missing file or another format version (one line)."""


class InvalidNoteError(ValueError):
    """A note that cannot be coded: not text, empty, or whitespace only."""


# =========================================================================== input checks


def check_note(text: object, *, max_chars: int = MAX_NOTE_CHARS) -> str:
    """Validate one note; truncate a very long one.

    Args:
        text: the note.
        max_chars: notes longer than this are cut to their first ``max_chars`` characters (at the
            last line break or space before the limit) and a warning is logged: a 1 MB note is
            coded from its first 50,000 characters (about 7,500 words) instead of being
            rejected, so a long record never stops a batch.

    Returns:
        The text to code.

    Raises:
        InvalidNoteError: ``text`` is not a string, is empty or is whitespace only, or has no
            letter at all (nothing to code).
    """
    if not isinstance(text, str):
        raise InvalidNoteError(f"note is {type(text).__name__}, expected text")
    if not text:
        raise InvalidNoteError("empty note")
    if not text.strip():
        raise InvalidNoteError("note is whitespace only")
    if not _LETTER.search(text):
        raise InvalidNoteError("note has no words (no letter in it)")
    if len(text) > max_chars:
        cut = max(text.rfind("\n", 0, max_chars), text.rfind(" ", 0, max_chars))
        cut = cut if cut > max_chars // 2 else max_chars
        warnings.warn(
            f"note of {len(text):,} characters truncated to its first {cut:,} (limit {max_chars:,})",
            stacklevel=2,
        )
        logger.warning("note of %d characters truncated to %d", len(text), cut)
        text = text[:cut]
    return text


# =========================================================================== labels and code texts


def label_codes(
    kg: KnowledgeGraph, system: str = "ICD10CM", kinds: Iterable[str] = ("category", "code", "extension")
) -> list[str]:
    """The label set: every node of ``system`` whose kind is one of ``kinds``, sorted by id.

    Args:
        kg: the graph.
        system: the code system.
        kinds: node kinds to keep (CodiEsp gold includes categories, so not only billable codes).

    Returns:
        System-qualified ids.
    """
    wanted = set(kinds)
    return sorted(
        n for n, d in kg.graph._node.items() if d.get("system") == system and d.get("kind") in wanted
    )


def neighbourhood_labels(kg: KnowledgeGraph, codes: Iterable[str], allowed: Iterable[str]) -> list[str]:
    """``codes`` with their ``is_a`` parents, siblings and children, restricted to ``allowed``, sorted.

    Args:
        kg: the graph.
        codes: seed codes (e.g. the gold codes of the training and dev notes).
        allowed: the codes that may be labels.

    Returns:
        The label set.
    """
    ok = set(allowed)
    graph = kg.graph
    out: set[str] = set()
    for code in codes:
        if code not in graph._node:
            continue
        out.add(code)
        parents = [p for p, keys in graph._succ[code].items() if "is_a" in keys]
        out.update(parents)
        for p in parents:
            out.update(c for c, keys in graph._pred[p].items() if "is_a" in keys)
        out.update(c for c, keys in graph._pred[code].items() if "is_a" in keys)
    return sorted(out & ok)


def map_gold_codes(codes: Iterable[str], label_row: Mapping[str, int]) -> tuple[dict[str, str], list[str]]:
    """Map gold codes that are not labels onto labels, where a safe rule exists.

    CodiEsp's CIE-10-ES 2018 codes are compared as ICD-10-CM 2026. Codes that need a 7th character
    are often given without it (``T81.4XX``, ``S39.94X``): they are mapped to the initial-encounter
    code (``...A``), or for obstetric codes the ``...0`` (single gestation / unspecified) code, when
    that exists (padding with ``X`` first); failing that, to the longest existing prefix (the
    nearest ancestor: ``T81.4XX`` -> ``T81.4``). Other systems are left unmapped.

    Args:
        codes: system-qualified gold codes.
        label_row: the label index.

    Returns:
        ``(mapping, unmapped)``: code -> label for the codes mapped, and the codes left out.
    """
    mapping: dict[str, str] = {}
    unmapped: list[str] = []
    for code in sorted(set(codes)):
        if code in label_row:
            continue
        system, _, bare = code.partition(":")
        target = None
        if system == "ICD10CM" and "." in bare:
            head, tail = bare.split(".", 1)
            pad = "X" * max(0, 3 - len(tail))
            for seventh in ("A", "0"):
                cand = f"{system}:{head}.{tail}{pad}{seventh}"
                if len(tail) < 4 and cand in label_row:
                    target = cand
                    break
            stem = f"{head}.{tail}".rstrip("X").rstrip(".")
            while target is None and len(stem) >= 3:
                if f"{system}:{stem}" in label_row:
                    target = f"{system}:{stem}"
                stem = stem[:-1].rstrip(".")
        if target is None:
            unmapped.append(code)
        else:
            mapping[code] = target
    return mapping, unmapped


def code_text_vectors(
    kg: KnowledgeGraph,
    ids: Sequence[str],
    encoder: TextEncoder,
    cache_dir: str | os.PathLike[str] | None,
    *,
    titles_only: bool = False,
    show_progress_bar: bool | None = None,
) -> Tensor:
    """Embeddings of :func:`kg.texts.node_text` for ``ids``, cached per code system.

    The cache entries are those of :func:`kgcode.snomed_predictor.embed_node_texts` (same texts,
    ids, key parts and encoder fingerprint), so one run embeds each system's texts once for every
    model that needs them: all nodes of a system with a non-empty text, sorted by id, under key
    parts :func:`kg.texts.texts_key_parts` ``(kind="node_text/<SYSTEM>")``.

    Args:
        kg: the graph.
        ids: node ids (any systems).
        encoder: the (frozen) text encoder.
        cache_dir: the :class:`~text_encoder.cache.EmbeddingCache` folder; ``None`` computes without
            caching (only ``ids`` are embedded then).
        titles_only: each node's own title only (no synonyms, no parents' titles: the no-KG
            ablation of ``CoderConfig.code_names``), cached under their own key.
        show_progress_bar: passed to the encoder on a cache miss.

    Returns:
        Float32 vectors, zero rows for nodes with an empty text.

    Shapes:
        output: ``(len(ids), encoder.dim)``.
    """
    from kg.texts import node_texts, texts_key_parts
    from text_encoder.cache import EmbeddingCache

    out = torch.zeros(len(ids), encoder.dim)
    recipe: dict[str, Any] = {"max_synonyms": 0, "parents": False} if titles_only else {}
    suffix = "/title" if titles_only else ""
    by_system: dict[str, list[int]] = {}
    for i, node_id in enumerate(ids):
        by_system.setdefault(node_id.partition(":")[0], []).append(i)
    for system, rows in by_system.items():
        if cache_dir is None:
            sys_ids, texts = node_texts(kg, [ids[i] for i in rows], **recipe)
            keep = [j for j, t in enumerate(texts) if t]
            if keep:
                vecs = encoder.encode([texts[j] for j in keep], show_progress_bar=show_progress_bar).float()
                out[torch.tensor([rows[j] for j in keep])] = vecs.cpu()
            continue
        all_ids = sorted(n for n, d in kg.graph._node.items() if d.get("system") == system)
        all_ids, texts = node_texts(kg, all_ids, **recipe)
        keep = [j for j, t in enumerate(texts) if t]
        if not keep:
            continue
        kept_ids = [all_ids[j] for j in keep]
        kept_texts = [texts[j] for j in keep]
        cache = EmbeddingCache(cache_dir)
        parts = texts_key_parts(kg, kind=f"node_text/{system}{suffix}")
        vecs = cache.load(cache.key(parts, kept_texts, encoder), kept_ids)
        wanted = sorted({ids[i] for i in rows} & set(kept_ids))
        if vecs is None and len(wanted) < len(kept_ids) // 2:
            # a few codes of a big system (a restricted label set): embed only those
            pos = {n: j for j, n in enumerate(kept_ids)}
            kept_ids, kept_texts = wanted, [kept_texts[pos[n]] for n in wanted]
            parts = texts_key_parts(kg, kind=f"node_text/{system}{suffix}/subset")
        if vecs is None:
            vecs = cache.get_or_compute(
                parts, kept_ids, kept_texts, encoder, batch_size=128, show_progress_bar=show_progress_bar
            )
        pos = {n: j for j, n in enumerate(kept_ids)}
        have = [(i, pos[ids[i]]) for i in rows if ids[i] in pos]
        if have:
            dst, src = zip(*have, strict=True)
            out[torch.tensor(dst)] = vecs[torch.tensor(src)].float()
    return out


#: the code bank's entries of the name vectors (``zero_shot_names``): one row per name, not per label
NAME_BANK_KEYS = ("names", "name_owner")

#: synonyms each code contributes to its names (as many as :func:`kg.texts.node_text` joins)
NAME_SYNONYMS = 8

#: code-side rows per slice of the zero-shot product on torch (8,192 x 384 bf16 is 6 MB: with the
#: batch's sentences it stays in the last-level cache; 4k-16k were within noise of each other)
ZS_CHUNK = 8192

#: sentences per zero-shot product call on ONNX Runtime (256 x 111,574 names: 114 MB of fp32 output)
ZS_ROWS = 256


def code_name_vectors(
    kg: KnowledgeGraph,
    ids: Sequence[str],
    encoder: TextEncoder,
    cache_dir: str | os.PathLike[str] | None,
    *,
    show_progress_bar: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Every name of ``ids`` embedded on its own: the zero-shot code side (``zero_shot_names``).

    A code's names are its title, then its inclusion terms and DO / Mondo synonyms
    (:func:`kg.texts.node_names`, at most :data:`NAME_SYNONYMS` synonyms: the names its joined
    code text holds). Each distinct name is embedded once and cached under key parts
    :func:`kg.texts.texts_key_parts` ``(kind="node_names/each")``, the texts hashed by the cache.

    Args:
        kg: the graph.
        ids: label ids.
        encoder: the (frozen) text encoder.
        cache_dir: the :class:`~text_encoder.cache.EmbeddingCache` folder (``None``: no cache).
        show_progress_bar: passed to the encoder on a cache miss.

    Returns:
        ``(vectors, owner)``: float32 L2-normalised name vectors and the label row of each; a
        label without a name has no row.

    Shapes:
        vectors: ``(n_names, encoder.dim)``; owner: ``(n_names,)`` long.
    """
    from kg.texts import node_names, texts_key_parts
    from text_encoder.cache import EmbeddingCache

    nodes = kg.graph._node
    texts: list[str] = []
    owner: list[int] = []
    for row, code in enumerate(ids):
        for name in node_names(kg, code, max_synonyms=NAME_SYNONYMS) if code in nodes else []:
            texts.append(name)
            owner.append(row)
    if not texts:
        return torch.zeros(0, encoder.dim), torch.zeros(0, dtype=torch.long)
    unique = sorted(set(texts))
    if cache_dir is None:
        vectors = encoder.encode(unique, show_progress_bar=show_progress_bar).float()
    else:
        vectors = EmbeddingCache(cache_dir).get_or_compute(
            texts_key_parts(kg, kind="node_names/each"),
            unique,
            unique,
            encoder,
            batch_size=128,
            show_progress_bar=show_progress_bar,
        )
    where = {t: i for i, t in enumerate(unique)}
    vectors = F.normalize(vectors.float().cpu(), dim=-1)
    return vectors[torch.tensor([where[t] for t in texts])], torch.tensor(owner, dtype=torch.long)


@dataclass
class GraphInputs:
    """What a graph encoder needs: node features, typed edges, and where the labels are.

    Attributes:
        x: node features (text vectors; zero rows for nodes without text).
        edge_index: edges ``src -> dst`` (both directions, see ``relation_names``).
        edge_type: relation id of each edge.
        relation_names: the relation vocabulary.
        label_nodes: the node row of each label.
        propagated: :meth:`RelationalSIGN.propagate` output for the label rows, when computed.
        index: the :class:`kg.pyg.NodeIndex` of the rows of ``x``.

    Shapes:
        x: ``(n, d)``; edge_index: ``(2, e)``; edge_type: ``(e,)``; label_nodes: ``(num_labels,)``;
        propagated: ``(num_operators, num_labels, d)``.
    """

    x: Tensor
    edge_index: Tensor
    edge_type: Tensor
    relation_names: list[str]
    label_nodes: Tensor
    propagated: Tensor | None = None
    index: Any = None


def graph_inputs(
    kg: KnowledgeGraph,
    labels: Sequence[str],
    encoder: TextEncoder,
    cache_dir: str | os.PathLike[str] | None,
    *,
    systems: Iterable[str] | None = None,
    show_progress_bar: bool | None = None,
) -> GraphInputs:
    """The KG's homogeneous PyG export (with reverse edges) and its node text features.

    Args:
        kg: the graph.
        labels: the label codes (all must be nodes of ``kg``).
        encoder: the text encoder of the node features.
        cache_dir: the embedding cache folder.
        systems: systems whose node texts become features (default: all but SNOMED CT, whose
            nodes carry no text); other nodes get zero features and only relay propagation.
        show_progress_bar: passed to the encoder on a cache miss.

    Returns:
        The inputs.
    """
    from kg.pyg import to_homogeneous

    data, index = to_homogeneous(kg, reverse=True)
    ids = index.ids
    wanted = None if systems is None else set(systems)
    feat_ids = [
        n for n in ids if (wanted is None or n.partition(":")[0] in wanted) and not n.startswith("SCTID:")
    ]
    x = torch.zeros(len(ids), encoder.dim)
    if feat_ids:
        vecs = code_text_vectors(kg, feat_ids, encoder, cache_dir, show_progress_bar=show_progress_bar)
        x[torch.tensor(index.rows(feat_ids))] = vecs
    return GraphInputs(
        x=x,
        edge_index=data.edge_index,
        edge_type=data.edge_type,
        relation_names=list(data.relation_names),
        label_nodes=torch.tensor(index.rows(labels), dtype=torch.long),
        index=index,
    )


# =========================================================================== training-note memory


class MemoryScorer(nn.Module):
    """Non-parametric memory of the training notes: evidence sentences, similar notes, frequencies.

    Three per-code features, combined with learnable weights ``w``:

    * ``evidence``: for each (training note, gold code) the sentence of the note that best matches
      the code's text is kept (*mined evidence*); a new note scores a code by the best cosine
      between any of its sentences and any evidence sentence of that code (0 for codes without
      evidence). This is label attention with the training mentions of a code as extra queries.
    * ``knn``: the notes most similar to the new one (mean sentence vector, softmax with temperature
      ``knn_temperature``) vote with their gold codes.
    * ``prior``: ``log(1 + training count)``, scaled to ``[0, 1]``.

    Codes never seen in training get 0 from all three, so they are ranked by the zero-shot and
    supervised paths only: the memory adds what training notes say about seen codes without
    giving any code a free learned parameter. During training the features of a training note are
    computed leave-one-out (``exclude``): its own evidence, its own vote and its own count are left
    out, so the codes it alone carries look exactly like unseen codes and the weights learn how
    much to trust memory against text.

    Args:
        num_labels: size of the label set.
        dim: sentence vector size.
        knn_temperature: softmax temperature over training notes.
        weights: initial ``(w_evidence, w_knn, w_prior)``.

    Shapes:
        buffers: ``ev_vectors (n_ev, dim)``, ``ev_rows (n_ev,)``, ``ev_notes (n_ev,)``,
        ``note_vectors (n_notes, dim)``, ``label_notes (n_pairs,)``, ``label_rows (n_pairs,)``,
        ``counts (num_labels,)``.
    """

    BUFFERS = ("ev_vectors", "ev_rows", "ev_notes", "note_vectors", "label_notes", "label_rows", "counts")

    def __init__(
        self,
        num_labels: int,
        dim: int,
        knn_temperature: float = 0.05,
        weights: Sequence[float] = (1.0, 1.0, 0.3),
    ) -> None:
        super().__init__()
        self.num_labels, self.dim, self.knn_temperature = int(num_labels), int(dim), float(knn_temperature)
        self._init_weights = [float(w) for w in weights]
        self.weights = nn.Parameter(torch.tensor(self._init_weights))
        self.register_buffer("ev_vectors", torch.zeros(0, self.dim))
        self.register_buffer("ev_rows", torch.zeros(0, dtype=torch.long))
        self.register_buffer("ev_notes", torch.zeros(0, dtype=torch.long))
        self.register_buffer("note_vectors", torch.zeros(0, self.dim))
        self.register_buffer("label_notes", torch.zeros(0, dtype=torch.long))
        self.register_buffer("label_rows", torch.zeros(0, dtype=torch.long))
        self.register_buffer("counts", torch.zeros(self.num_labels))

    @property
    def num_notes(self) -> int:
        """Training notes in memory."""
        return int(self.note_vectors.shape[0])

    @staticmethod
    def note_vector(vectors: Tensor, mask: Tensor) -> Tensor:
        """A note's vector: the normalised mean of its normalised sentence vectors.

        Shapes:
            vectors: ``(b, s, dim)``; mask: ``(b, s)``; output: ``(b, dim)``.
        """
        v = F.normalize(vectors.float(), dim=-1) * mask[..., None]
        return F.normalize(v.sum(1), dim=-1)

    @torch.no_grad()
    def build(
        self, segments: Sequence[Segments], gold: Sequence[Sequence[int]], code_text: Tensor
    ) -> MemoryScorer:
        """Fill the memory from training notes.

        Args:
            segments: each training note's sentences.
            gold: each note's gold label rows.
            code_text: the label code text vectors (to find each gold code's best sentence).

        Returns:
            ``self``.
        """
        ev, ev_rows, ev_notes, notes, l_notes, l_rows = [], [], [], [], [], []
        counts = torch.zeros(self.num_labels)
        for n, (seg, rows) in enumerate(zip(segments, gold, strict=True)):
            v = F.normalize(seg.vectors.float(), dim=-1) if len(seg) else torch.zeros(0, self.dim)
            notes.append(F.normalize(v.mean(0), dim=-1) if len(seg) else torch.zeros(self.dim))
            if not rows:
                continue
            r = torch.tensor(list(rows), dtype=torch.long)
            counts[r] += 1
            l_notes.append(torch.full((len(r),), n, dtype=torch.long))
            l_rows.append(r)
            if len(seg):
                best = (F.normalize(code_text[r].float(), dim=-1) @ v.T).argmax(dim=1)
                ev.append(v[best])
                ev_rows.append(r)
                ev_notes.append(torch.full((len(r),), n, dtype=torch.long))
        cat = lambda xs, empty: torch.cat(xs) if xs else empty  # noqa: E731
        self.ev_vectors = cat(ev, torch.zeros(0, self.dim))
        self.ev_rows = cat(ev_rows, torch.zeros(0, dtype=torch.long))
        self.ev_notes = cat(ev_notes, torch.zeros(0, dtype=torch.long))
        self.note_vectors = torch.stack(notes) if notes else torch.zeros(0, self.dim)
        self.label_notes = cat(l_notes, torch.zeros(0, dtype=torch.long))
        self.label_rows = cat(l_rows, torch.zeros(0, dtype=torch.long))
        self.counts = counts
        return self

    def features(
        self, vectors: Tensor, mask: Tensor, *, rows: Tensor | None = None, exclude: Tensor | None = None
    ) -> Tensor:
        """The three memory features of every label (or ``rows``) for each note.

        Args:
            vectors: sentence vectors.
            mask: real sentences.
            rows: only these labels.
            exclude: for each note, the index of a training note to leave out (``-1``: none).

        Returns:
            ``(evidence, knn, prior)`` stacked on the first axis.

        Shapes:
            vectors: ``(b, s, dim)``; mask: ``(b, s)``; exclude: ``(b,)``; output: ``(3, b, c)``.
        """
        with torch.autocast(device_type=vectors.device.type, enabled=False):
            return self._features(vectors.float(), mask, rows, exclude)

    def _columns(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The labels the memory knows (a training note or evidence), and the buffers' rows among them.

        Every other label has all three features 0, so the features are computed on these columns
        only (~1,800 of ~98,000 labels for CodiEsp) and scattered at the end. Recomputed per call
        (well under a millisecond), so it can never disagree with the buffers.

        Returns:
            ``(columns, position, label_cols, ev_cols)``: the label rows, each label's position
            among them (-1: none), and ``label_rows`` / ``ev_rows`` as positions.
        """
        cols = torch.unique(torch.cat([self.label_rows, self.ev_rows, self.counts.nonzero()[:, 0]]))
        position = torch.full((self.num_labels,), -1, dtype=torch.long)
        position[cols] = torch.arange(len(cols))
        return cols, position, position[self.label_rows], position[self.ev_rows]

    def _compact(
        self, vectors: Tensor, mask: Tensor, exclude: Tensor | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The features on the memory's columns, with the columns and each label's position among them.

        Returns:
            ``(features, columns, position)`` (see :meth:`_columns`).

        Shapes:
            features: ``(3, b, len(columns))``.
        """
        cols, position, label_cols, ev_cols = self._columns()
        b, n = vectors.shape[0], len(cols)
        ev = torch.zeros(b, n)
        knn = torch.zeros(b, n)
        prior = self.counts[cols][None].expand(b, n).clone()
        seg = F.normalize(vectors.float(), dim=-1)
        if self.ev_vectors.shape[0]:
            # real sentences only (a batch is padded to its longest note), best per note
            flat = seg[mask] @ self.ev_vectors.float().T  # (real sentences, n_ev)
            note_of = torch.arange(b)[:, None].expand(mask.shape)[mask]
            sim = torch.full((b, flat.shape[1]), -2.0).scatter_reduce(
                0, note_of[:, None].expand_as(flat), flat, reduce="amax", include_self=True
            )
            if exclude is not None:
                sim = sim.masked_fill(self.ev_notes[None] == exclude[:, None], -2.0)
            idx = ev_cols[None].expand(b, -1)
            ev = ev.scatter_reduce(1, idx, sim.clamp(min=0.0), reduce="amax", include_self=True)
        if self.num_notes:
            nv = self.note_vector(vectors, mask)
            logits = nv @ self.note_vectors.float().T / self.knn_temperature
            if exclude is not None:
                logits = logits.masked_fill(torch.arange(self.num_notes)[None] == exclude[:, None], -1e4)
            weights = torch.softmax(logits, dim=1)  # (b, n_notes)
            contrib = weights[:, self.label_notes]  # (b, n_pairs)
            knn = knn.index_add(1, label_cols, contrib) if label_cols.numel() else knn
        if exclude is not None and label_cols.numel():
            for i, e in enumerate(exclude.tolist()):
                if e >= 0:
                    prior[i, label_cols[self.label_notes == e]] -= 1
        prior = torch.log1p(prior.clamp(min=0)) / math.log1p(max(1.0, float(self.counts.max())))
        return torch.stack([ev, knn, prior]), cols, position

    def _features(self, vectors: Tensor, mask: Tensor, rows: Tensor | None, exclude: Tensor | None) -> Tensor:
        compact, cols, position = self._compact(vectors, mask, exclude)
        if rows is None:
            out = torch.zeros(3, vectors.shape[0], self.num_labels)
            out[:, :, cols] = compact
            return out
        pos = position[rows]
        out = torch.zeros(3, vectors.shape[0], *rows.shape)
        known = pos >= 0
        out[:, :, known] = compact[:, :, pos[known]]
        return out

    def combine(self, features: Tensor) -> Tensor:
        """``w . features``.

        Shapes:
            features: ``(3, b, c)``; output: ``(b, c)``.
        """
        return torch.einsum("k,kbc->bc", self.weights.float(), features.float())

    def forward(
        self, vectors: Tensor, mask: Tensor, *, rows: Tensor | None = None, exclude: Tensor | None = None
    ) -> Tensor:
        """The weighted memory score (see :meth:`features`); 0 for labels the memory does not know.

        Shapes:
            output: ``(b, c)``.
        """
        if rows is not None:
            return self.combine(self.features(vectors, mask, rows=rows, exclude=exclude))
        with torch.autocast(device_type=vectors.device.type, enabled=False):
            features, cols, _ = self._compact(vectors.float(), mask, exclude)
            compact = self.combine(features)
        out = torch.zeros(vectors.shape[0], self.num_labels, dtype=compact.dtype)
        out[:, cols] = compact
        return out

    def load_buffers(self, state: Mapping[str, Tensor]) -> None:
        """Resize the buffers to the shapes in ``state`` (the memory size is known only when loading)."""
        for name in self.BUFFERS:
            if name in state:
                setattr(self, name, torch.empty_like(state[name]))

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {
            "num_labels": self.num_labels,
            "dim": self.dim,
            "knn_temperature": self.knn_temperature,
            "weights": self._init_weights,
        }


@dataclass
class ScoringInputs:
    """What :meth:`Coder.score_notes` computes for a batch of notes before any dictionary weight or
    prior enters (:meth:`Coder.scoring_inputs`), kept to score the same notes again.

    Attributes:
        vectors, mask: :meth:`Coder.pad_segments` of the notes.
        coverage, matched: :meth:`Coder.lexical_match` (``None`` without a lexicon).
        stage_one: the cheap first stage over all labels (``None`` when every label is scored
            exactly).

    Shapes:
        vectors: ``(b, s, text_dim)``; mask: ``(b, s)``; coverage, matched: ``(b, num_labels)``.
    """

    vectors: Tensor
    mask: Tensor
    coverage: Tensor | None
    matched: Tensor | None
    stage_one: tuple[Tensor, Tensor | None, Tensor] | None


# =========================================================================== configuration


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), as oneDNN reports it.

    Without it, bf16 matrix products are emulated and run about three times slower than fp32
    (measured on an AVX2-only AMD EPYC: a 300 x 384 by 384 x 98k product took 4.9 s in bf16 and
    1.5 s in fp32).
    """
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an older or a non-oneDNN build
        return False


_DTYPE_WARNED: set[str] = set()


INFERENCE_DTYPES = ("auto", "fp32", "bf16", "int8")

#: Where the note encoder runs at inference: torch, or ONNX Runtime (``pip install 'kgcode[onnx]'``).
INFERENCE_BACKENDS = ("torch", "onnx")
#: the values of :attr:`CoderConfig.code_names`
CODE_NAMES = ("kg", "title")


def resolve_inference_backend(backend: str | None, dtype: str | None) -> tuple[str, str]:
    """The backend and precision to run, checked together.

    Args:
        backend: ``"torch"`` (``None`` too) or ``"onnx"``: the note encoder exported once to ONNX
            Runtime (fused graph; fp32 or int8, see :meth:`text_encoder.hf.HFTextEncoder.onnx_runtime`),
            and the zero-shot product with every code text too, in fp32 for both precisions
            (:class:`text_encoder.onnx_backend.OnnxMatMul`); the rest of the scoring is torch.
        dtype: see :func:`resolve_inference_dtype`. With ``"onnx"``, ``"auto"`` means fp32, and
            bf16 is refused (ONNX Runtime's CPU kernels have no bf16 path here).

    Returns:
        ``(backend, dtype)``, e.g. ``("onnx", "int8")``.

    Raises:
        ValueError: an unknown backend or precision, or bf16 on the onnx backend.
    """
    key = (backend or "torch").lower()
    if key not in INFERENCE_BACKENDS:
        raise ValueError(f"inference_backend={backend!r}: expected one of {', '.join(INFERENCE_BACKENDS)}")
    if key == "onnx":
        if (dtype or "fp32").lower() in ("bf16", "bfloat16"):
            raise ValueError("inference_dtype bf16 runs on the torch backend only: use fp32 or int8 on onnx")
        if (dtype or "").lower() == "auto":
            return key, "fp32"
    return key, resolve_inference_dtype(dtype)


def resolve_inference_dtype(name: str | None) -> str:
    """The inference precision to run: ``"bf16"``, ``"fp32"`` or ``"int8"``.

    Args:
        name: ``"auto"`` (bf16 where :func:`native_bf16`, else fp32), ``"bf16"``, ``"fp32"``
            (``None`` and ``"float32"`` mean fp32, ``"bfloat16"`` bf16), or ``"int8"``: the note
            encoder's linear layers dynamically quantized (:meth:`text_encoder.base.TextEncoder.quantized`)
            and the zero-shot product with every code text in int8, the rest of the scoring and the
            code bank in fp32. ``auto`` never picks int8, which changes the
            scores a little (measured on CodiEsp dev in ``bench/results/coder.json``).

    Returns:
        ``"bf16"``, ``"fp32"`` or ``"int8"``.

    Raises:
        ValueError: another name.
    """
    key = (name or "fp32").lower()
    if key in ("fp32", "float32"):
        return "fp32"
    if key == "int8":
        return "int8"
    if key == "auto":
        return "bf16" if native_bf16() else "fp32"
    if key in ("bf16", "bfloat16"):
        if not native_bf16() and "bf16" not in _DTYPE_WARNED:
            _DTYPE_WARNED.add("bf16")
            logger.warning(
                "inference_dtype 'bf16' on a CPU without native bf16: emulated, slower than fp32 "
                "(set inference_dtype: auto)"
            )
        return "bf16"
    raise ValueError(f"inference_dtype={name!r}: expected one of {', '.join(INFERENCE_DTYPES)}")


def config_from_dict(cls: type[_C], data: Mapping[str, Any], what: str) -> _C:
    """A config dataclass from a mapping; unknown keys are a one-line error listing the known ones.

    Args:
        cls: the dataclass.
        data: its fields.
        what: the kind of option, for the message (``"coder"``, ``"training"``).

    Returns:
        The instance.
    """
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"unknown {what} option(s) {', '.join(unknown)}: known are {', '.join(sorted(known))}"
        )
    return cls(**dict(data))


@dataclass
class CoderConfig:
    """How a coder is built (registry names + kwargs) and run. JSON/YAML-ready.

    Attributes:
        encoder: text encoder registry name (``"hf"``; ``"hashing"`` for tests).
        encoder_kwargs: its constructor arguments (``model_path`` ``None`` = bundled MiniLM).
        gnn: graph encoder registry name, or ``None`` for text-only code vectors.
        gnn_kwargs: its constructor arguments (``in_dim`` and ``relation_names`` are filled in).
        fusion: fusion head registry name.
        fusion_kwargs: its constructor arguments (dimensions are filled in).
        label_system: the code system of the labels.
        label_kinds: node kinds that are labels.
        code_names: which of the KG's names describe a code: ``"kg"`` (its title, inclusion terms and
            DO / Mondo synonyms, and its parents' titles in the code text) or ``"title"`` (its own
            title only, in the code text and the dictionary; training then also leaves out the
            KG's hierarchy and Excludes notes: no neighbour negatives, guidelines of the gold
            codes' titles only). ``"title"`` is the no-KG ablation; it needs ``gnn: null``.
        zero_shot_names: the zero-shot maximum that picks each note's candidates (with the
            memory) and feeds the candidate reranker is a code's best cosine with a sentence over
            *each of its names* embedded on its own (:func:`code_name_vectors`), not over its
            joined code text. A long joined text blurs a code into its synonyms and parents; the
            best single name matches a sentence that says one of them (CodiEsp dev: 16 % against
            11 % of the unseen-code gold mentions in the top 10 among unseen codes). The names
            add about 13 % rows to the zero-shot product. Models saved before this option read
            the code text (``false``).
        label_scope: ``"all"`` (every code of ``label_system`` / ``label_kinds``) or ``"data"``
            (the gold codes of the training and dev notes with their parents, siblings and
            children: a much smaller label set, for demos and quick runs).
        graph_systems: systems whose node texts are graph features (``None``: all but SNOMED CT).
        max_note_chars: longer notes are truncated (with a warning).
        max_segments: at most this many sentences of a note are scored (the first ones).
        inference_dtype: ``"auto"`` (bf16 where the CPU computes bf16 natively, else fp32: see
            :func:`resolve_inference_dtype`), ``"bf16"`` (autocast, and a bf16 code bank), ``"fp32"``
            or ``"int8"`` (an int8 note encoder and zero-shot product, the rest fp32; never chosen by
            ``auto``).
        inference_backend: ``"torch"`` or ``"onnx"`` (the note encoder in ONNX Runtime, fp32 or
            int8: see :func:`resolve_inference_backend`).
        batch_size: notes per scoring batch in :meth:`Coder.predict`.
        threshold: decision threshold on the probability (tuned on dev by training).
        top_k: default number of codes returned per note.
        memory: add the training-note memory (:class:`MemoryScorer`) to the head's score.
        memory_kwargs: its arguments (``knn_temperature``, ``weights``).
        rerank_k: score every label with the cheap zero-shot maximum + memory, then each note's
            ``rerank_k`` best with the full head (0: the full head on every label; slower).
        unseen_bias: logit offset added to every label with no training note (the
            frequency-aware combination). Supervision on a few hundred notes pushes the codes it
            has seen above all others, so the zero-shot / graph score of an unseen code never
            reaches the top of the list; this offset, tuned on dev by :func:`kgcode.training.train`
            (``tune_unseen_bias``), lets unseen codes compete again. 0 = no offset.
        lexicon: match the codes' names (titles, inclusion terms) in the note's sentences
            (:mod:`fusion.lexicon`) and add the match to the logits.
        lexical_weight: weight of the match in the logits (tuned on dev by training; 0 = off).
        lexical_min_coverage: a match counts when at least this share (IDF-weighted) of a
            name's words is in one sentence.
        lexical_prior: how far a match of a code is trusted before the training notes say
            otherwise: the match is scaled by ``(hits + lexical_prior) / (matches + 1)`` over
            the training notes (tuned on dev with the weight).
        rerank_candidates: candidates per note from the coder's score for the candidate
            reranker (:mod:`fusion.rerank`; used only by a coder trained with one).
        rerank_unseen_candidates: more candidates among the codes without training notes, from
            the zero-shot cosine and from the dictionary match, this many each.
        rerank_rare_candidates: more candidates among the codes with 1 to 5 training notes, by the
            coder's score (0: none; the benchmarked configuration keeps 0: on CodiEsp dev the
            pool of 40 was within noise, see ``bench/bench_rerank_probe.py``).
        reranked_unseen_bias: logit offset of the codes without training notes after the
            reranker (tuned on dev like ``unseen_bias``: the trees learn from folds in which
            "unseen" codes are rarer than in new notes).
        rerank_relations: training gives the reranker the knowledge graph's relations between
            codes (:data:`fusion.rerank.RELATION_FEATURES`: Excludes1 / Excludes2 /
            code-first-use-additional-code-also links to the note's other candidates, shared ICD-9
            GEM codes, DO / Mondo cross-references); the links are saved with the model.
    """

    encoder: str = "hf"
    encoder_kwargs: dict[str, Any] = field(default_factory=lambda: {"max_length": 128, "batch_size": 128})
    gnn: str | None = "rsign"
    gnn_kwargs: dict[str, Any] = field(default_factory=dict)
    fusion: str = "hybrid_label_attention"
    fusion_kwargs: dict[str, Any] = field(default_factory=dict)
    label_system: str = "ICD10CM"
    label_kinds: list[str] = field(default_factory=lambda: ["category", "code", "extension"])
    label_scope: str = "all"
    code_names: str = "kg"
    zero_shot_names: bool = True
    graph_systems: list[str] | None = None
    max_note_chars: int = MAX_NOTE_CHARS
    max_segments: int = 256
    inference_dtype: str = "auto"
    inference_backend: str = "torch"
    batch_size: int = 16
    threshold: float = 0.5
    top_k: int = 10
    memory: bool = True
    memory_kwargs: dict[str, Any] = field(default_factory=dict)
    rerank_k: int = 1024
    unseen_bias: float = 0.0
    lexicon: bool = True
    lexical_weight: float = 0.0
    lexical_min_coverage: float = 0.5
    lexical_prior: float = 0.2
    rerank_candidates: int = 60
    rerank_unseen_candidates: int = 20
    rerank_rare_candidates: int = 0
    reranked_unseen_bias: float = 0.0
    rerank_relations: bool = True

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CoderConfig:
        """Build from a mapping; unknown keys are an error (the message lists the known ones)."""
        return config_from_dict(cls, data, "coder")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy."""
        return json.loads(json.dumps(asdict(self)))


# =========================================================================== the coder


def _kwargs_for(cls: type, given: Mapping[str, Any], dims: Mapping[str, Any]) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters
    out = {k: v for k, v in dims.items() if k in params and k not in given}
    out.update(given)
    return out


def _versions() -> dict[str, str]:
    from kgcode import __version__

    return {"kgcode": __version__, "torch": torch.__version__}


def _kg_versions(kg: KnowledgeGraph | None) -> dict[str, Any]:
    if kg is None:
        return {}
    manifest = kg.manifest or {}
    sources = manifest.get("sources") or kg.build_report.get("sources") or []
    return {
        "format_version": manifest.get("format_version"),
        "created": manifest.get("created"),
        "sources": {str(s.get("name")): str(s.get("version")) for s in sources if isinstance(s, dict)},
    }


class Coder(nn.Module):
    """Text encoder + graph encoder + fusion head over a fixed label set (see the module docstring).

    Args:
        config: the configuration.
        labels: the label codes, one per output row.
        titles: the title of each label (for predictions).
        train_counts: training notes per label (for frequency buckets; zeros when unknown).
        relation_names: the KG relation vocabulary (needed by relation-aware graph encoders).
        kg_versions: the KG's format and source versions (written to ``config.json``).
        lexicon: the dictionary matcher over the labels (required when ``config.lexicon``).
    """

    def __init__(
        self,
        config: CoderConfig,
        labels: Sequence[str],
        titles: Sequence[str] | None = None,
        train_counts: Sequence[int] | None = None,
        relation_names: Sequence[str] | None = None,
        kg_versions: Mapping[str, Any] | None = None,
        lexicon: Lexicon | None = None,
    ) -> None:
        super().__init__()
        if not labels:
            raise ValueError("a coder needs at least one label")
        # a bad name fails here, not at predict time
        resolve_inference_backend(config.inference_backend, config.inference_dtype)
        if config.code_names not in CODE_NAMES:
            raise ValueError(f"code_names={config.code_names!r}: expected one of {', '.join(CODE_NAMES)}")
        if config.code_names == "title" and config.gnn is not None:
            raise ValueError("code_names='title' describes codes without the KG: it needs gnn: null")
        self.config = config
        self.labels = list(labels)
        self.label_row = {c: i for i, c in enumerate(self.labels)}
        if len(self.label_row) != len(self.labels):
            raise ValueError("labels must be unique")
        self.titles = list(titles) if titles is not None else [""] * len(self.labels)
        self.train_counts = (
            [int(c) for c in train_counts] if train_counts is not None else [0] * len(self.labels)
        )
        self.relation_names = list(relation_names or [])
        self.kg_versions = dict(kg_versions or {})
        self.threshold = float(config.threshold)
        #: labels without a training note (they get ``config.unseen_bias``)
        self.unseen_mask = torch.tensor([c == 0 for c in self.train_counts], dtype=torch.bool)
        self.card: dict[str, Any] = {}
        #: the stacked candidate reranker (:mod:`fusion.rerank`), set by training; ``None``: off
        self.reranker: TreeEnsemble | None = None
        #: the KG's links between labels that the reranker's relation features read (set by training)
        self.relations: RelationTable | None = None
        self._label_table: LabelTable | None = None
        if config.lexicon and lexicon is None:
            raise ValueError("config.lexicon is on: pass the lexicon (Coder.from_kg builds it from the KG)")
        if lexicon is not None and lexicon.num_labels != len(self.labels):
            raise ValueError(f"lexicon has {lexicon.num_labels} rows for {len(self.labels)} labels")
        self.lexicon = lexicon if config.lexicon else None
        #: per label, training notes where its name matched (row 0) and where it was also gold (row 1)
        self.lexicon_counts = torch.zeros(2, len(self.labels))
        self.encoder = text_encoder_from_config({"name": config.encoder, "kwargs": config.encoder_kwargs})
        self.text_dim = int(self.encoder.dim)
        graph: GraphEncoder | None = None
        if config.gnn:
            cls = gnn_registry.get(config.gnn)
            graph = cls(
                **_kwargs_for(
                    cls,
                    config.gnn_kwargs,
                    {
                        "in_dim": self.text_dim,
                        "relation_names": self.relation_names,
                        "num_relations": len(self.relation_names),
                    },
                )
            )
        self.graph = graph
        self.graph_dim = int(getattr(graph, "out_dim", self.text_dim)) if graph is not None else 0
        self.code_dim = self.text_dim + self.graph_dim
        fcls = fusion_registry.get(config.fusion)
        self.fusion = fcls(
            **_kwargs_for(
                fcls,
                config.fusion_kwargs,
                {
                    "text_dim": self.text_dim,
                    "code_dim": self.code_dim,
                    "seg_dim": self.text_dim,
                    "dim": self.text_dim,
                },
            )
        )
        self._head_code_dim = int(
            getattr(self.fusion, "code_dim", getattr(self.fusion, "dim", self.code_dim))
        )
        self.memory = (
            MemoryScorer(len(self.labels), self.text_dim, **config.memory_kwargs) if config.memory else None
        )
        self.bank: dict[str, Tensor] = {}
        self._text: Tensor | None = None
        self._names: tuple[Tensor, Tensor] | None = None
        self._graph_inputs: GraphInputs | None = None
        self.eval()

    # ------------------------------------------------------------------ construction helpers

    @classmethod
    def from_kg(
        cls,
        config: CoderConfig,
        kg: KnowledgeGraph,
        *,
        train_counts: Mapping[str, int] | None = None,
        labels: Sequence[str] | None = None,
    ) -> Coder:
        """A fresh coder whose labels are the KG's codes of ``config.label_system`` / ``label_kinds``.

        Args:
            config: the configuration.
            kg: the graph.
            train_counts: training notes per code.
            labels: use these labels instead (e.g. a restricted set for a quick test).

        Returns:
            The coder (resources not attached yet: see :meth:`attach`).
        """
        from kg.pyg import relation_vocabulary

        labels = (
            list(labels) if labels is not None else label_codes(kg, config.label_system, config.label_kinds)
        )
        nodes = kg.graph._node
        titles = [nodes[c].get("title", "") if c in nodes else "" for c in labels]
        counts = [int((train_counts or {}).get(c, 0)) for c in labels]
        lexicon = None
        if config.lexicon:
            from kg.texts import node_names

            t0 = time.perf_counter()
            # "title": max_synonyms=0 keeps each code's own title only
            most = 0 if config.code_names == "title" else None
            lexicon = Lexicon([node_names(kg, c, max_synonyms=most) if c in nodes else [] for c in labels])
            logger.info(
                "lexicon: %d names of %d labels in %.1f s",
                lexicon.num_names,
                len(labels),
                time.perf_counter() - t0,
            )
        return cls(
            config,
            labels,
            titles,
            counts,
            relation_vocabulary(kg, reverse=True),
            _kg_versions(kg),
            lexicon=lexicon,
        )

    def attach(
        self,
        kg: KnowledgeGraph,
        cache_dir: str | os.PathLike[str] | None,
        *,
        show_progress_bar: bool | None = None,
    ) -> Coder:
        """Compute (or read from the cache) the code text vectors and the graph inputs for training.

        Args:
            kg: the graph the labels come from.
            cache_dir: the embedding cache folder.
            show_progress_bar: progress bars for cache misses.

        Returns:
            ``self``.
        """
        start = time.perf_counter()
        missing = [c for c in self.labels if c not in kg.graph._node]
        if missing:
            raise ValueError(f"{len(missing)} label(s) are not in the KG, e.g. {missing[0]}")
        if self.graph is not None:
            gi = graph_inputs(
                kg,
                self.labels,
                self.encoder,
                cache_dir,
                systems=self.config.graph_systems,
                show_progress_bar=show_progress_bar,
            )
            if list(gi.relation_names) != self.relation_names and self.relation_names:
                logger.warning("KG relation vocabulary differs from the coder's; using the KG's")
            if isinstance(self.graph, RelationalSIGN):
                t0 = time.perf_counter()
                gi.propagated = self.graph.propagate(
                    gi.x,
                    gi.edge_index,
                    gi.edge_type,
                    rows=gi.label_nodes,
                    dtype=torch.float16 if len(self.labels) > 20_000 else torch.float32,
                )
                logger.info(
                    "graph propagation for %d labels in %.1f s", len(self.labels), time.perf_counter() - t0
                )
            self._graph_inputs = gi
            self._text = gi.x[gi.label_nodes]
        else:
            self._text = code_text_vectors(
                kg,
                self.labels,
                self.encoder,
                cache_dir,
                titles_only=self.config.code_names == "title",
                show_progress_bar=show_progress_bar,
            )
        if self.config.zero_shot_names and self.config.code_names == "title":
            # one name per code, its title: the code text already is that title's vector
            rows = (self._text.norm(dim=-1) > 0).nonzero().squeeze(1)
            self._names = (F.normalize(self._text[rows], dim=-1), rows)
        elif self.config.zero_shot_names:
            self._names = code_name_vectors(
                kg, self.labels, self.encoder, cache_dir, show_progress_bar=show_progress_bar
            )
        if self._names is not None:
            logger.info("%d code names for the zero-shot maximum", len(self._names[1]))
        logger.info("coder resources ready in %.1f s", time.perf_counter() - start)
        return self

    def attach_tensors(
        self, text: Tensor, graph: GraphInputs | None = None, names: tuple[Tensor, Tensor] | None = None
    ) -> Coder:
        """Attach precomputed resources (code text vectors, graph inputs, name vectors).

        Args:
            text: the code text vectors.
            graph: the graph inputs (with a graph encoder).
            names: :func:`code_name_vectors` (``None``: the zero-shot maximum reads the code text).

        Shapes:
            text: ``(num_labels, text_dim)``; names: ``(n_names, text_dim)`` and ``(n_names,)``.
        """
        if text.shape != (len(self.labels), self.text_dim):
            raise ValueError(
                f"text vectors {tuple(text.shape)} for {len(self.labels)} labels of dim {self.text_dim}"
            )
        if names is not None:
            vectors, owner = names
            if vectors.ndim != 2 or vectors.shape[1] != self.text_dim or owner.shape != vectors.shape[:1]:
                raise ValueError(
                    f"name vectors {tuple(vectors.shape)} with owners {tuple(owner.shape)}: expected "
                    f"(n, {self.text_dim}) and (n,)"
                )
            if len(owner) and (int(owner.min()) < 0 or int(owner.max()) >= len(self.labels)):
                raise ValueError(f"name owners outside the {len(self.labels)} label rows")
            names = (F.normalize(vectors.float(), dim=-1), owner.long())
        self._names = names
        self._text = text.float()
        self._graph_inputs = graph
        if graph is not None and isinstance(self.graph, RelationalSIGN) and graph.propagated is None:
            graph.propagated = self.graph.propagate(
                graph.x, graph.edge_index, graph.edge_type, rows=graph.label_nodes
            )
        return self

    @property
    def is_attached(self) -> bool:
        """Whether training resources are attached."""
        return self._text is not None

    @property
    def code_text(self) -> Tensor:
        """The label code text vectors (training resources must be attached).

        Shapes:
            output: ``(num_labels, text_dim)``.
        """
        if self._text is None:
            raise RuntimeError("no code text vectors: call attach(kg, cache_dir) first")
        return self._text

    # ------------------------------------------------------------------ code vectors

    def code_vectors(self, rows: Tensor | None = None) -> Tensor:
        """``[text vector ; graph vector]`` of some labels (with gradients through the graph encoder).

        Args:
            rows: label rows (all labels when ``None``).

        Returns:
            The code vectors.

        Shapes:
            rows: ``(c,)``; output: ``(c, code_dim)``.
        """
        text = self.code_text if rows is None else self.code_text[rows]
        if self.graph is None:
            return text
        gi = self._graph_inputs
        if gi is None:
            raise RuntimeError("no graph inputs: call attach(kg, cache_dir) first")
        if isinstance(self.graph, RelationalSIGN) and gi.propagated is not None:
            prop = gi.propagated if rows is None else gi.propagated[:, rows]
            graph = self.graph.combine(text, prop)
        else:
            nodes = self.graph(gi.x, gi.edge_index, gi.edge_type)
            graph = nodes[gi.label_nodes] if rows is None else nodes[gi.label_nodes[rows]]
        return torch.cat([text, graph.to(text.dtype)], dim=-1)

    def head_codes(self, codes: Tensor) -> Tensor:
        """The part of the code vectors the fusion head reads (the text part for ``zero_shot``)."""
        return codes[:, : self._head_code_dim]

    # ------------------------------------------------------------------ code bank

    @torch.no_grad()
    def finalize(self, *, chunk: int = 8192) -> Coder:
        """Precompute the code bank for every label (needs attached resources).

        Args:
            chunk: labels per graph-encoder pass.

        Returns:
            ``self``.

        Raises:
            RuntimeError: ``zero_shot_names`` is on and no code names are attached.
        """
        if self.config.zero_shot_names and self._names is None:
            raise RuntimeError(
                "zero_shot_names is on but no code names are attached: attach(kg, cache_dir), or "
                "attach_tensors(..., names=code_name_vectors(...))"
            )
        was = self.training
        self.eval()
        parts: dict[str, list[Tensor]] = {}
        n = len(self.labels)
        for start in range(0, n, chunk):
            rows = torch.arange(start, min(n, start + chunk))
            codes = self.head_codes(self.code_vectors(rows))
            for key, value in self.fusion.code_bank(codes).items():
                parts.setdefault(key, []).append(value.detach().float())
        if "zs" not in parts:  # the text vectors of the zero-shot stage, whatever the head
            parts["zs"] = [F.normalize(self.code_text.float(), dim=-1)]
        bank = {k: torch.cat(v) for k, v in parts.items()}
        if self.config.zero_shot_names and self._names is not None:  # the zero-shot code side
            bank["names"], bank["name_owner"] = self._names
        self.bank = self._bank_in_runtime_dtype(bank)
        self.train(was)
        return self

    def _bank_in_runtime_dtype(self, bank: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The code bank's matrices in the precision this machine runs (vectors stay float32).

        A folder saved where bf16 is native holds a bf16 bank; loaded on a CPU without it, the
        bank is widened to float32 rather than multiplied in emulated bf16.
        """
        dtype = torch.bfloat16 if self.runtime_dtype == "bf16" else torch.float32
        return {
            k: (v.to(dtype if v.ndim == 2 else torch.float32) if v.is_floating_point() else v).contiguous()
            for k, v in bank.items()
        }

    @property
    def label_bank(self) -> dict[str, Tensor]:
        """The code bank's per-label entries (one row per label), without the name vectors."""
        return {k: v for k, v in self.bank.items() if k not in NAME_BANK_KEYS}

    @property
    def has_bank(self) -> bool:
        """Whether :meth:`finalize` ran (or the bank was loaded)."""
        return bool(self.bank)

    # ------------------------------------------------------------------ scoring

    @property
    def runtime_dtype(self) -> str:
        """``config.inference_dtype`` resolved on this machine: ``"bf16"``, ``"fp32"`` or ``"int8"``."""
        return resolve_inference_backend(self.config.inference_backend, self.config.inference_dtype)[1]

    @property
    def runtime_backend(self) -> str:
        """``config.inference_backend``: ``"torch"`` or ``"onnx"``."""
        return resolve_inference_backend(self.config.inference_backend, self.config.inference_dtype)[0]

    def set_inference_dtype(self, name: str) -> Coder:
        """Switch the inference precision (``config.inference_dtype``) of a loaded coder.

        Args:
            name: see :func:`resolve_inference_dtype`.

        Returns:
            ``self``.

        Raises:
            ValueError: an unknown name, ``"int8"`` with an encoder or a torch build without an int8
                version, or a precision the current backend does not run.
        """
        return self.set_inference(name, self.config.inference_backend)

    def set_inference_backend(self, name: str) -> Coder:
        """Switch where the note encoder runs (``config.inference_backend``): ``"torch"`` or ``"onnx"``.

        With ``"onnx"`` the encoder is exported now if no earlier export is cached (about 10 s for
        MiniLM, once per machine), so problems show here, not at the first note.

        Args:
            name: see :func:`resolve_inference_backend`.

        Returns:
            ``self``.

        Raises:
            ValueError: an unknown name, onnxruntime/onnx missing, an encoder without an ONNX
                version, or a precision the backend does not run.
        """
        return self.set_inference(self.config.inference_dtype, name)

    def set_inference(self, dtype: str, backend: str) -> Coder:
        """Switch precision and backend together (see :meth:`set_inference_dtype`)."""
        new_backend, _ = resolve_inference_backend(backend, dtype)  # a bad name fails here
        old = (self.config.inference_dtype, self.config.inference_backend)
        self.config.inference_dtype, self.config.inference_backend = dtype, new_backend
        try:
            self.note_encoder  # noqa: B018  (builds the int8 copy or the ONNX session: fails now)
        except ValueError:
            self.config.inference_dtype, self.config.inference_backend = old
            raise
        if self.bank:
            self.bank = self._bank_in_runtime_dtype(self.bank)
            # the code-text product too (1.5-3 s for 98k codes): part of loading, not of the first note
            if new_backend == "onnx":
                self._zs_onnx()
            elif self.runtime_dtype == "int8":
                self._zs_int8()
        return self

    @property
    def note_encoder(self) -> TextEncoder:
        """The encoder that :meth:`encode_notes` runs: the text encoder, its int8 copy, or its
        ONNX Runtime copy (``$KGCODE_HOME/onnx``)."""
        backend, dtype = self.runtime_backend, self.runtime_dtype
        if backend == "onnx":
            from kgcode.paths import cache_dir

            return self.encoder.onnx_runtime(int8=dtype == "int8", cache_dir=cache_dir() / "onnx")
        return self.encoder.quantized() if dtype == "int8" else self.encoder

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.runtime_dtype == "bf16":
            return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def pad_segments(self, segments: Sequence[Segments]) -> tuple[Tensor, Tensor]:
        """Stack notes' segment vectors into a padded batch.

        Returns:
            ``(vectors, mask)``.

        Shapes:
            vectors: ``(b, s, text_dim)``; mask: ``(b, s)`` bool, ``s = min(longest, max_segments)``.
        """
        limit = self.config.max_segments
        width = max(1, min(limit, max((len(s) for s in segments), default=1)))
        out = torch.zeros(len(segments), width, self.text_dim)
        mask = torch.zeros(len(segments), width, dtype=torch.bool)
        for i, seg in enumerate(segments):
            k = min(len(seg), width)
            if k:
                out[i, :k] = seg.vectors[:k].float()
                mask[i, :k] = True
        return out, mask

    # ------------------------------------------------------------------ dictionary match

    def lexical_match(self, segments: Sequence[Segments]) -> tuple[Tensor, Tensor]:
        """Each label's dictionary coverage in each note (below ``lexical_min_coverage``: 0).

        Args:
            segments: the notes' segments (their texts are matched).

        Returns:
            ``(coverage, best)``: the coverage and the index of the best-matching segment (-1: none).

        Shapes:
            coverage: ``(b, num_labels)`` float; best: ``(b, num_labels)`` int32.
        """
        if self.lexicon is None:
            raise RuntimeError("this coder has no lexicon (config.lexicon is off)")
        if not segments:
            return torch.zeros(0, len(self.labels)), torch.zeros(0, len(self.labels), dtype=torch.int32)
        limit, floor = self.config.max_segments, float(self.config.lexical_min_coverage)
        matches = [self.lexicon.match(seg.texts[:limit], floor) for seg in segments]
        cov = torch.from_numpy(np.stack([c for c, _ in matches]))
        best = torch.from_numpy(np.stack([b for _, b in matches]))
        return cov, best

    def lexical_reliability(self, prior: float | None = None) -> Tensor:
        """How far each label's dictionary matches are trusted: ``(hits + prior) / (matches + 1)``.

        Args:
            prior: default ``config.lexical_prior``.

        Shapes:
            output: ``(num_labels,)``.
        """
        p = float(self.config.lexical_prior if prior is None else prior)
        fires, hits = self.lexicon_counts
        return (hits + p) / (fires + 1.0)

    def lexical_logits(self, segments: Sequence[Segments]) -> Tensor | None:
        """The dictionary term added to the logits (``None`` without lexicon or with weight 0).

        Shapes:
            output: ``(b, num_labels)``.
        """
        w = float(self.config.lexical_weight or 0.0)
        if self.lexicon is None or w == 0.0:
            return None
        cov, _ = self.lexical_match(segments)
        return w * cov * self.lexical_reliability()

    def fit_lexicon(self, segments: Sequence[Segments], gold: Sequence[Sequence[int]]) -> dict[str, int]:
        """Count, over training notes, where each label's name matched and where it was also gold.

        Args:
            segments: the training notes' segments.
            gold: each note's gold label rows.

        Returns:
            Totals: ``{"matches", "hits", "labels_matched"}``.
        """
        if self.lexicon is None:
            raise RuntimeError("this coder has no lexicon (config.lexicon is off)")
        counts = torch.zeros(2, len(self.labels))
        for start in range(0, len(segments), 64):
            cov, _ = self.lexical_match(segments[start : start + 64])
            fired = cov > 0
            is_gold = torch.zeros_like(fired)
            for j, rows in enumerate(gold[start : start + 64]):
                if rows:
                    is_gold[j, list(rows)] = True
            counts[0] += fired.sum(0)
            counts[1] += (fired & is_gold).sum(0)
        self.lexicon_counts = counts
        return {
            "matches": int(counts[0].sum()),
            "hits": int(counts[1].sum()),
            "labels_matched": int((counts[0] > 0).sum()),
        }

    # ------------------------------------------------------------------ scoring

    def score_segments(
        self,
        vectors: Tensor,
        mask: Tensor,
        *,
        part: str = "all",
        rows: Tensor | None = None,
        attention: bool = False,
        lexical: Tensor | None = None,
        coverage: Tensor | None = None,
        stage_one: tuple[Tensor, Tensor | None, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Logits of every label (or ``rows``) from padded segment vectors, using the code bank.

        Args:
            vectors: segment vectors.
            mask: real segments.
            part: ``"all"`` (head + memory + dictionary match), ``"head"``, ``"memory"``, or for
                the hybrid head ``"zero_shot"`` / ``"supervised"`` only.
            rows: score only these labels.
            attention: also return the attention over segments.
            lexical: the dictionary term of every label (:meth:`lexical_logits`), added with
                ``part="all"``.
            coverage: the dictionary coverage of every label (:meth:`lexical_match`), a feature of
                the candidate reranker (``part="all"`` on every label; zeros when ``None``).
            stage_one: :meth:`_stage_one` of these vectors, when already computed (see
                :class:`ScoringInputs`).

        Returns:
            ``(logits, attention or None)``.

        Shapes:
            vectors: ``(b, s, text_dim)``; mask: ``(b, s)``; lexical, coverage: ``(b, num_labels)``;
            logits: ``(b, c)``; attention: ``(b, c, s)``.
        """
        if not self.bank:
            raise RuntimeError("no code bank: call finalize() (or load a saved coder)")
        k = int(self.config.rerank_k or 0)
        if part == "all" and rows is None and not attention and 0 < k < len(self.labels):
            logits, zs = self._score_two_stage(vectors, mask, k, lexical, stage_one=stage_one)
            return self._rerank(self._unseen_offset(logits, None), vectors, mask, coverage, zs), None
        bank = self.label_bank if rows is None else {key: v[rows] for key, v in self.label_bank.items()}
        head = self.fusion
        with self._autocast():
            if part in ("all", "head"):
                logits, att = head.score_bank(vectors, mask, bank, attention=attention)
            elif part == "zero_shot" and hasattr(head, "zero_shot"):
                logits, att = head.zero_shot.score_bank(vectors, mask, bank, attention=attention)
            elif part == "supervised" and hasattr(head, "supervised"):
                logits, att = head.supervised.score_bank(vectors, mask, bank, attention=attention)
            elif part == "memory" and self.memory is not None:
                logits, att = self.memory(vectors, mask, rows=rows), None
            else:
                raise ValueError(
                    f"part={part!r}: expected 'all', 'head', 'memory' (with memory), or "
                    "'zero_shot'/'supervised' (hybrid head)"
                )
        logits = logits.float()
        if part == "all" and self.memory is not None:
            logits = logits + self.memory(vectors, mask, rows=rows)
        if part == "all" and lexical is not None:
            logits = logits + (lexical if rows is None else lexical[:, rows])
        if part == "all":
            logits = self._unseen_offset(logits, rows)
            if rows is None:
                logits = self._rerank(logits, vectors, mask, coverage)
        return logits, (att.float() if att is not None else None)

    def _rerank(
        self, logits: Tensor, vectors: Tensor, mask: Tensor, coverage: Tensor | None, zs: Tensor | None = None
    ) -> Tensor:
        """The candidate reranker's scores (:mod:`fusion.rerank`); ``logits`` as they are without one.

        Shapes:
            logits, coverage, zs: ``(b, num_labels)``; output: ``(b, num_labels)``.
        """
        if self.reranker is None:
            return logits
        if zs is None:
            zs = self.zero_shot_max(vectors, mask)
        if coverage is None:
            coverage = torch.zeros_like(logits)
        candidates = candidate_features(
            logits,
            zs,
            coverage,
            self.lexical_reliability() if self.lexicon is not None else torch.zeros(len(self.labels)),
            self.label_table,
            top_k=int(self.config.rerank_candidates),
            unseen_k=int(self.config.rerank_unseen_candidates),
            rare_k=int(self.config.rerank_rare_candidates),
            relations=self.reranker_relations,
        )
        out = rerank_logits(logits, candidates, self.reranker)
        bias = float(self.config.reranked_unseen_bias or 0.0)
        return out + bias * self.unseen_mask.to(out.dtype) if bias else out

    @property
    def reranker_relations(self) -> RelationTable | None:
        """The relation table if the reranker reads :data:`fusion.rerank.RELATION_FEATURES`, else None."""
        if self.reranker is None or tuple(self.reranker.features) != RERANK_FEATURES + RELATION_FEATURES:
            return None
        if self.relations is None:
            raise ValueError("the reranker reads relation features but the coder has no relation table")
        return self.relations

    @property
    def label_table(self) -> LabelTable:
        """Per-label constants of the reranker's features (built once)."""
        if self._label_table is None:
            self._label_table = LabelTable.build(self.labels, self.titles, self.train_counts)
        return self._label_table

    def _unseen_offset(self, logits: Tensor, rows: Tensor | None) -> Tensor:
        """Add ``config.unseen_bias`` to the labels without training notes (see :class:`CoderConfig`).

        Shapes:
            logits: ``(b, c)``; rows: ``(c,)`` or ``(b, c)`` label rows (``None``: all labels).
        """
        bias = float(getattr(self.config, "unseen_bias", 0.0) or 0.0)
        if bias == 0.0:
            return logits
        unseen = self.unseen_mask if rows is None else self.unseen_mask[rows]
        return logits + bias * unseen.to(logits.dtype)

    @property
    def unseen_offset(self) -> float:
        """The last logit offset of the labels without training notes: ``reranked_unseen_bias``
        with a reranker, else ``unseen_bias`` (both tuned on dev by training)."""
        return float(getattr(self.config, self._unseen_offset_key) or 0.0)

    @property
    def _unseen_offset_key(self) -> str:
        return "reranked_unseen_bias" if self.reranker is not None else "unseen_bias"

    def set_unseen_offset(self, value: float) -> Coder:
        """Move the operating point between the codes seen in training and the long tail.

        Sets :attr:`unseen_offset` for this coder (the saved model is unchanged unless saved
        again). Larger values put more codes without training notes into each note's top codes
        and above the threshold, at some cost to the seen codes: on CodiEsp dev the benchmarked
        coder keeps MAP and micro-F1 at 0.45 or more up to an offset of about 2, where unseen R@10
        is 0.15-0.16 against 0.10-0.11 at the tuned offset (``unseen_frontier`` in
        ``bench/results/coder.json``). The ``kgcode`` commands take ``--unseen-offset``.

        Args:
            value: the offset (a finite number; 0 = none). Far beyond about 10 the probabilities
                of the lifted codes saturate at 1 and tie.

        Returns:
            ``self``.

        Raises:
            ValueError: not a finite number.
        """
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
        if not math.isfinite(v):
            raise ValueError(f"unseen offset {value!r}: expected a finite number")
        setattr(self.config, self._unseen_offset_key, v)
        return self

    def zero_shot_max(self, vectors: Tensor, mask: Tensor) -> Tensor:
        """Zero-shot score of every label: the best cosine between a sentence and the code's side.

        The code's side is each of its names embedded on its own when the bank holds them
        (``zero_shot_names``: the best name counts), else its joined code text. All sentences of
        the batch meet those vectors in one pass (bf16 or int8 when configured on torch; fp32 in
        ONNX Runtime on the onnx backend), so the bank is read once per batch, in slices.
        A label without a name scores 0 (the cosine with an empty code text).

        Shapes:
            vectors: ``(b, s, text_dim)``; mask: ``(b, s)``; output: ``(b, num_labels)``.
        """
        key = self._zs_key
        side = self.bank[key]
        seg = F.normalize(vectors.float(), dim=-1)
        flat = seg[mask].to(side.dtype)
        best = torch.zeros(vectors.shape[0], side.shape[0])
        counts = mask.sum(1).tolist()
        # The product never exists whole (1,000 sentences x 111,574 names is 450 MB in fp32): on
        # torch it runs in slices of the code side, so each slice stays in cache while its per-note
        # maxima are taken (~25 % faster than one product over all; the same numbers up to the
        # kernel's rounding, bitwise the same on CodiEsp dev); ONNX Runtime takes the notes'
        # sentences a few hundred at a time.
        if flat.shape[0] and self.runtime_backend == "onnx":
            product = self._zs_onnx()
            for lo, hi, first, last in _note_groups(counts, ZS_ROWS):
                _note_max(product(flat[first:last]), counts[lo:hi], best[lo:hi])
        elif flat.shape[0] and self.runtime_dtype == "int8":
            start = 0
            for part in self._zs_int8():  # one int8 product per slice (one scale per code row: exact)
                sim = part(flat)
                _note_max(sim, counts, best[:, start : start + sim.shape[1]])
                start += sim.shape[1]
        elif flat.shape[0]:
            for start in range(0, side.shape[0], ZS_CHUNK):
                stop = start + ZS_CHUNK
                _note_max(flat @ side[start:stop].T, counts, best[:, start:stop])
        if key == "zs":
            return best
        owner = self.bank["name_owner"].expand(best.shape[0], -1)
        out = torch.zeros(best.shape[0], len(self.labels))
        return out.scatter_reduce_(1, owner, best, "amax", include_self=False)

    @property
    def _zs_key(self) -> str:
        """The bank entry the zero-shot maximum multiplies: ``"names"`` or ``"zs"`` (code text)."""
        return "names" if "names" in self.bank else "zs"

    def _zs_int8(self) -> nn.ModuleList:
        """The zero-shot product (names or code texts) in int8 (``inference_dtype: int8``), one
        module per slice of :data:`ZS_CHUNK` code rows, built once per bank (a plain attribute,
        not a submodule: never saved)."""
        return self._per_bank(
            "_zs_int8_cache",
            lambda side: nn.ModuleList(
                int8_linear(side[s : s + ZS_CHUNK]) for s in range(0, len(side), ZS_CHUNK)
            ),
        )

    def _zs_onnx(self) -> nn.Module:
        """The zero-shot product (names or code texts) in ONNX Runtime, fp32 (``inference_backend:
        onnx``, either precision: exact and faster than torch's int8 product on AVX2), built once
        per bank (a plain attribute: never saved)."""
        from text_encoder.onnx_backend import OnnxMatMul

        return self._per_bank("_zs_onnx_cache", OnnxMatMul)

    def _per_bank(self, name: str, build: Any) -> Any:
        """``build`` of the zero-shot maximum's matrix (:attr:`_zs_key`), kept under ``name`` until
        the bank tensor changes."""
        zs = self.bank[self._zs_key]
        cached = self.__dict__.get(name)
        if cached is None or cached[0] is not zs:
            cached = (zs, build(zs))
            self.__dict__[name] = cached
        return cached[1]

    def _stage_one(self, vectors: Tensor, mask: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """Cheap scores of every label (weighted zero-shot maximum plus memory), the memory part and
        the zero-shot maximum itself."""
        head = self.fusion
        w = float(head.weights.detach()[0]) if hasattr(head, "weights") else 1.0
        zs = self.zero_shot_max(vectors, mask)
        out = w * zs
        memory = self.memory(vectors, mask) if self.memory is not None else None
        return (out if memory is None else out + memory), memory, zs

    def _score_two_stage(
        self,
        vectors: Tensor,
        mask: Tensor,
        k: int,
        lexical: Tensor | None = None,
        *,
        stage_one: tuple[Tensor, Tensor | None, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Every label scored cheaply (:meth:`_stage_one`); each note's ``k`` best re-scored exactly.

        The dictionary term (``lexical``) is part of both stages, so a code whose name is in the
        note is among the candidates.

        The exact score of the head (label attention over the sentences) plus the memory replaces the
        cheap one for the candidates; every other label keeps its cheap score, shifted below the
        lowest candidate, so the ranking and the probabilities of the long tail stay monotone in the
        cheap score. ``k`` is ``config.rerank_k``; with 0 every label is scored exactly.

        Returns:
            ``(logits, zero_shot)``: the scores and the zero-shot maximum of every label.

        Shapes:
            logits, zero_shot: ``(b, num_labels)``.
        """
        with self._autocast():
            first, memory, zs = stage_one if stage_one is not None else self._stage_one(vectors, mask)
            if lexical is not None:
                first = first + lexical
            top = first.topk(k, dim=1)
            rows = top.indices  # (b, k): each note's candidates
            bank = {key: v[rows] for key, v in self.label_bank.items() if key != "zs" or self._head_reads_zs}
            exact, _ = self.fusion.score_bank(vectors, mask, bank)
            exact = exact.float()
            if memory is not None:
                exact = exact + memory.gather(1, rows)
            if lexical is not None:
                exact = exact + lexical.gather(1, rows)
            floor = exact.amin(dim=1, keepdim=True) - 1.0
            out = floor - (top.values[:, -1:] - first).clamp(min=0.0) - 1e-3
            out.scatter_(1, rows, exact)
        return out, zs

    @property
    def _head_reads_zs(self) -> bool:
        return hasattr(self.fusion, "zero_shot") or isinstance(
            self.fusion, fusion.label_attention.ZeroShotFusion
        )

    def encode_notes(self, texts: Sequence[str], *, show_progress_bar: bool | None = None) -> list[Segments]:
        """Segment and encode notes (batched across notes; bf16 autocast or the int8 encoder when
        configured).

        Args:
            texts: checked notes (see :func:`check_note`).
            show_progress_bar: passed to the encoder.

        Returns:
            One :class:`Segments` per note.
        """
        encoder = self.note_encoder
        with torch.inference_mode(), self._autocast():
            return encoder.encode_segments_many(list(texts), show_progress_bar=show_progress_bar)

    @torch.inference_mode()
    def score_texts(
        self,
        texts: Sequence[str],
        *,
        part: str = "all",
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> Tensor:
        """Logits of every label for each note (notes are checked first).

        Returns:
            The logits.

        Shapes:
            output: ``(len(texts), num_labels)``.
        """
        checked = [check_note(t, max_chars=self.config.max_note_chars) for t in texts]
        self.eval()
        bs = int(batch_size or self.config.batch_size)
        out = []
        for start in _progress(range(0, len(checked), bs), show_progress_bar, "score"):
            segs = self.encode_notes(checked[start : start + bs])
            out.append(self.score_notes(segs, part=part)[0])
        return torch.cat(out) if out else torch.zeros(0, len(self.labels))

    @torch.no_grad()
    def score_notes(
        self,
        segments: Sequence[Segments],
        *,
        part: str = "all",
        padded: tuple[Tensor, Tensor] | None = None,
        inputs: ScoringInputs | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Logits of every label for encoded notes: the one scoring path of predict and evaluation.

        With ``part="all"``: the head, the memory, the dictionary match, the unseen-code offset
        and, when trained, the candidate reranker.

        Args:
            segments: the notes' encoded sentences.
            part: see :meth:`score_segments`.
            padded: :meth:`pad_segments` of ``segments`` when the caller has it already.
            inputs: :meth:`scoring_inputs` of ``segments``, when the same notes are scored again
                with another dictionary weight or prior (the scores are the same as without).

        Returns:
            ``(logits, matched)``: ``matched`` is each label's dictionary-matched sentence (-1:
            none), ``None`` without the dictionary match.

        Shapes:
            logits, matched: ``(len(segments), num_labels)``.
        """
        if inputs is not None:
            vec, mask = inputs.vectors, inputs.mask
        else:
            vec, mask = padded if padded is not None else self.pad_segments(segments)
        if part != "all":
            return self.score_segments(vec, mask, part=part)[0], None
        lexical = coverage = matched = None
        weight = float(self.config.lexical_weight or 0.0)
        if self.lexicon is not None and (weight != 0.0 or self.reranker is not None):
            if inputs is not None and inputs.coverage is not None:
                coverage, matched = inputs.coverage, inputs.matched
            else:
                coverage, matched = self.lexical_match(segments)
            if weight != 0.0:
                lexical = weight * coverage * self.lexical_reliability()
        stage_one = inputs.stage_one if inputs is not None else None
        logits, _ = self.score_segments(vec, mask, lexical=lexical, coverage=coverage, stage_one=stage_one)
        return logits, (matched if weight != 0.0 else None)

    @torch.no_grad()
    def scoring_inputs(self, segments: Sequence[Segments]) -> ScoringInputs:
        """What :meth:`score_notes` computes before the dictionary weight and prior enter.

        Scoring the same notes under many dictionary settings (training's sweep) then skips the
        padding, the dictionary look-up and the zero-shot product over all labels each time. Valid
        while the weights, the bank and the lexicon stay as they are.

        Args:
            segments: the notes' encoded sentences.

        Returns:
            The padded vectors, the dictionary coverage and matched sentences (with a lexicon), and
            the cheap first stage over all labels (when ``rerank_k`` selects candidates).
        """
        vec, mask = self.pad_segments(segments)
        coverage = matched = None
        if self.lexicon is not None:
            coverage, matched = self.lexical_match(segments)
        stage_one = None
        k = int(self.config.rerank_k or 0)
        if self.bank and 0 < k < len(self.labels):
            with self._autocast():
                stage_one = self._stage_one(vec, mask)
        return ScoringInputs(vec, mask, coverage, matched, stage_one)

    @torch.inference_mode()
    def predict(
        self,
        texts: Sequence[str],
        *,
        top_k: int | None = None,
        threshold: float | None = None,
        evidence: int = 3,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> list[list[dict[str, Any]]]:
        """Code notes: for each, the codes above the threshold among its ``top_k`` best, with evidence.

        Args:
            texts: the notes (each checked with :func:`check_note`; a bad one raises
                :class:`InvalidNoteError` naming its position).
            top_k: at most this many codes per note (default ``config.top_k``).
            threshold: probability threshold (default: the one tuned on dev; 0 returns the top
                ``top_k`` whatever their scores).
            evidence: sentences of evidence per code (highest attention first).
            batch_size: notes per batch (default ``config.batch_size``).
            show_progress_bar: progress over batches.

        Returns:
            Per note, a list of ``{"code", "title", "score", "evidence": [{"sentence", "start",
            "end", "weight"}]}``, best first. ``score`` is the probability.
        """
        if isinstance(texts, str):
            raise TypeError("expected a list of notes, got a single string: wrap it in a list")
        checked = []
        for i, text in enumerate(texts):
            try:
                checked.append(check_note(text, max_chars=self.config.max_note_chars))
            except InvalidNoteError as err:
                raise InvalidNoteError(f"note {i}: {err}") from None
        self.eval()
        k = int(top_k or self.config.top_k)
        thr = self.threshold if threshold is None else float(threshold)
        bs = int(batch_size or self.config.batch_size)
        results: list[list[dict[str, Any]]] = []
        for start in _progress(range(0, len(checked), bs), show_progress_bar, "predict"):
            segs = self.encode_notes(checked[start : start + bs])
            vec, mask = self.pad_segments(segs)
            logits, matched = self.score_notes(segs, padded=(vec, mask))
            probs = torch.sigmoid(logits)
            top = probs.topk(min(k, probs.shape[1]), dim=1)
            for j, seg in enumerate(segs):
                keep = [
                    (float(p), int(r)) for p, r in zip(top.values[j], top.indices[j], strict=True) if p >= thr
                ]
                match = matched[j] if matched is not None else None
                results.append(self._describe(seg, vec[j : j + 1], mask[j : j + 1], keep, evidence, match))
        return results

    def _describe(
        self,
        seg: Segments,
        vec: Tensor,
        mask: Tensor,
        keep: list[tuple[float, int]],
        evidence: int,
        matched: Tensor | None = None,
    ) -> list[dict[str, Any]]:
        """The records of one note; ``matched``: each label's dictionary-matched sentence (-1: none)."""
        if not keep:
            return []
        rows = torch.tensor([r for _, r in keep])
        # the head alone gives the attention (the memory and the offset only change logits, unused here)
        _, att = self.score_segments(vec, mask, part="head", rows=rows, attention=True)
        assert att is not None
        out = []
        n = min(len(seg), att.shape[-1])
        for c, (p, r) in enumerate(keep):
            weights = att[0, c, :n]
            order = torch.argsort(weights, descending=True)[: max(0, evidence)].tolist()
            hit = int(matched[r]) if matched is not None else -1
            if 0 <= hit < n and evidence > 0 and hit not in order:
                # the sentence that names the code is always shown (first), whatever the attention
                order = [hit, *order[: evidence - 1]]
            elif hit in order:
                order = [hit, *(i for i in order if i != hit)]
            out.append(
                {
                    "code": self.labels[r],
                    "title": self.titles[r],
                    "score": round(p, 6),
                    "evidence": [
                        {
                            "sentence": seg.texts[i],
                            "start": int(seg.spans[i][0]),
                            "end": int(seg.spans[i][1]),
                            "weight": round(float(weights[i]), 6),
                            "matched": i == hit,
                        }
                        for i in order
                    ],
                }
            )
        return out

    # ------------------------------------------------------------------ saving

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """The state dict without the frozen text encoder (what ``model.safetensors`` stores)."""
        state: dict[str, Tensor] = {}
        for name, module in (("graph", self.graph), ("fusion", self.fusion), ("memory", self.memory)):
            if module is None:
                continue
            for key, value in module.state_dict().items():
                state[f"{name}.{key}"] = value
        return state

    def load_trainable_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Load what :meth:`trainable_state_dict` returned (strict).

        Raises:
            CoderFormatError: missing or unexpected keys (the message names a few).
        """
        for name, module in (("graph", self.graph), ("fusion", self.fusion), ("memory", self.memory)):
            if module is None:
                continue
            sub = {k[len(name) + 1 :]: v for k, v in state.items() if k.startswith(name + ".")}
            if isinstance(module, MemoryScorer):
                module.load_buffers(sub)
            try:
                module.load_state_dict(sub, strict=True)
            except RuntimeError as err:
                raise CoderFormatError(
                    f"{WEIGHTS_FILE}: weights do not fit the {name} part ({str(err).splitlines()[0]})"
                ) from None
        extra = [k for k in state if not k.startswith(("graph.", "fusion.", "memory."))]
        if extra:
            raise CoderFormatError(f"{WEIGHTS_FILE}: unexpected weights {', '.join(extra[:3])}")

    def config_dict(self) -> dict[str, Any]:
        """The content of ``config.json``."""
        enc = self.encoder.get_config()
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "versions": _versions(),
            "kg": self.kg_versions,
            "encoder": {
                **enc,
                "frozen": True,
                "stored": False,
                "note": "pretrained weights are not in model.safetensors: rebuilt from name and kwargs",
            },
            "gnn": self.graph.get_config() if self.graph is not None else None,
            "fusion": self.fusion.get_config(),
            "memory": self.memory.get_config() if self.memory is not None else None,
            "coder": self.config.to_dict(),
            "relation_names": self.relation_names,
            "threshold": self.threshold,
            "num_labels": len(self.labels),
            "reranker": (
                {
                    "kind": "boosted_trees",
                    "features": list(self.reranker.features),
                    "trees": self.reranker.num_trees,
                }
                if self.reranker is not None
                else None
            ),
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the coder folder atomically (temporary folder, fsync, rename).

        Args:
            path: the folder (created or replaced; an existing non-coder folder with files is
                never replaced).

        Returns:
            The folder.

        Raises:
            RuntimeError: no code bank (call :meth:`finalize` first).
            FileExistsError: ``path`` is a file or a folder that is not a coder folder.
        """
        from safetensors.torch import save_file

        if not self.bank:
            raise RuntimeError("no code bank to save: call finalize() first")
        target = Path(path).absolute()
        if target.exists() and (
            not target.is_dir() or (any(target.iterdir()) and not (target / CONFIG_FILE).is_file())
        ):
            raise FileExistsError(f"{target} exists and is not a coder folder: refusing to replace it")
        from kg.store import atomic_folder

        with atomic_folder(target) as tmp:
            tensors = {k: v.detach().cpu().contiguous() for k, v in self.trainable_state_dict().items()}
            tensors.update({f"bank.{k}": v.detach().cpu().contiguous() for k, v in self.bank.items()})
            if self.lexicon is not None:
                tensors["lexicon.matches"] = self.lexicon_counts[0].contiguous()
                tensors["lexicon.hits"] = self.lexicon_counts[1].contiguous()
                _write_json(tmp / LEXICON_FILE, self.lexicon.to_dict(self.labels))
            if self.reranker is not None:
                tensors.update(self.reranker.state_dict("reranker."))
                relations = self.reranker_relations
                if relations is not None:
                    tensors.update(relations.state_dict("relations."))
            save_file(
                tensors,
                str(tmp / WEIGHTS_FILE),
                metadata={"format": FORMAT, "format_version": str(FORMAT_VERSION)},
            )
            _write_json(tmp / CONFIG_FILE, self.config_dict())
            _write_json(
                tmp / LABELS_FILE,
                {
                    "format": "kgcode-label-index",
                    "format_version": 1,
                    "codes": self.labels,
                    "rows": self.label_row,
                    "titles": self.titles,
                    "train_counts": self.train_counts,
                },
            )
            card = {
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "versions": _versions(),
                "kg": self.kg_versions,
                "threshold": self.threshold,
                **self.card,
            }
            _write_json(tmp / CARD_FILE, card)
        logger.info("saved coder (%d labels) to %s", len(self.labels), target)
        return target

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Coder:
        """Load a coder folder written by :meth:`save`.

        Every file is checked first; the text encoder is rebuilt from its registry name and kwargs.

        Args:
            path: the folder.

        Returns:
            The coder in eval mode, ready to :meth:`predict`.

        Raises:
            CoderFormatError: the folder or a file is missing, a file is unreadable, or the format
                version is not :data:`FORMAT_VERSION` (the message names the file and versions).
        """
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        start = time.perf_counter()
        folder = Path(path)
        if not folder.is_dir():
            raise CoderFormatError(f"{folder}: no such coder folder")
        for name in CODER_FILES:
            if not (folder / name).is_file():
                raise CoderFormatError(
                    f"{folder / name}: missing file (a coder folder holds {', '.join(CODER_FILES)})"
                )
        config = _read_json(folder / CONFIG_FILE)
        if config.get("format") != FORMAT:
            raise CoderFormatError(
                f"{folder / CONFIG_FILE}: not a kgcode coder "
                f"(format {config.get('format')!r}, expected {FORMAT!r})"
            )
        version = config.get("format_version")
        if version not in READABLE_FORMAT_VERSIONS:
            raise CoderFormatError(
                f"{folder / CONFIG_FILE}: coder format version {version!r}, this kgcode "
                f"({_versions()['kgcode']}) reads versions "
                f"{', '.join(str(v) for v in READABLE_FORMAT_VERSIONS)}"
            )
        labels = _read_json(folder / LABELS_FILE)
        if labels.get("format_version") != 1 or not isinstance(labels.get("codes"), list):
            raise CoderFormatError(f"{folder / LABELS_FILE}: not a label index of format version 1")
        try:
            stored = dict(config["coder"])
            stored.setdefault("lexicon", False)  # format version 1: no dictionary match
            stored.setdefault("zero_shot_names", False)  # saved before the option: the code text
            cfg = CoderConfig.from_dict(stored)
            lexicon = None
            if cfg.lexicon:
                if not (folder / LEXICON_FILE).is_file():
                    raise CoderFormatError(
                        f"{folder / LEXICON_FILE}: missing file (the config has lexicon on; "
                        f"format version {version} stores it)"
                    )
                try:
                    lexicon = Lexicon.from_dict(_read_json(folder / LEXICON_FILE), labels["codes"])
                except ValueError as err:
                    raise CoderFormatError(f"{folder / LEXICON_FILE}: {err}") from None
            if config.get("gnn"):
                cfg.gnn, cfg.gnn_kwargs = config["gnn"]["name"], dict(config["gnn"]["kwargs"])
            cfg.fusion, cfg.fusion_kwargs = config["fusion"]["name"], dict(config["fusion"]["kwargs"])
            cfg.encoder, cfg.encoder_kwargs = config["encoder"]["name"], dict(config["encoder"]["kwargs"])
            coder = cls(
                cfg,
                labels["codes"],
                labels.get("titles"),
                labels.get("train_counts"),
                config.get("relation_names"),
                config.get("kg"),
                lexicon=lexicon,
            )
        except CoderFormatError:
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise CoderFormatError(f"{folder / CONFIG_FILE}: cannot rebuild the coder ({err})") from None
        try:
            tensors = load_file(str(folder / WEIGHTS_FILE))
        except (SafetensorError, OSError) as err:
            raise CoderFormatError(f"{folder / WEIGHTS_FILE}: unreadable ({err})") from None
        bank = {k[5:]: v for k, v in tensors.items() if k.startswith("bank.")}
        if not bank:
            raise CoderFormatError(f"{folder / WEIGHTS_FILE}: no code bank (bank.*) in the weights")
        rows = {int(v.shape[0]) for k, v in bank.items() if k not in NAME_BANK_KEYS}
        if rows != {len(coder.labels)}:
            raise CoderFormatError(
                f"{folder / WEIGHTS_FILE}: code bank has {rows} rows for {len(coder.labels)} labels"
            )
        names, owner = (bank.get(k) for k in NAME_BANK_KEYS)
        if (
            cfg.zero_shot_names != (names is not None)
            or (names is None) != (owner is None)
            or (
                names is not None
                and (
                    owner.dtype != torch.int64
                    or names.shape != (len(owner), coder.text_dim)
                    or (len(owner) and (int(owner.min()) < 0 or int(owner.max()) >= len(coder.labels)))
                )
            )
        ):
            raise CoderFormatError(
                f"{folder / WEIGHTS_FILE}: the code names (bank.names, bank.name_owner) do not match "
                f"{CONFIG_FILE} (zero_shot_names: {cfg.zero_shot_names}) or the {len(coder.labels)} labels"
            )
        if coder.lexicon is not None:
            try:
                coder.lexicon_counts = torch.stack(
                    [tensors["lexicon.matches"], tensors["lexicon.hits"]]
                ).float()
            except (KeyError, RuntimeError):
                raise CoderFormatError(
                    f"{folder / WEIGHTS_FILE}: no lexicon.matches / lexicon.hits of "
                    f"{len(coder.labels)} labels (the config has lexicon on)"
                ) from None
            if coder.lexicon_counts.shape != (2, len(coder.labels)):
                raise CoderFormatError(
                    f"{folder / WEIGHTS_FILE}: lexicon counts for {coder.lexicon_counts.shape[1]} labels, "
                    f"expected {len(coder.labels)}"
                )
        stored_reranker = config.get("reranker")
        if stored_reranker:
            try:
                features = stored_reranker["features"]
                coder.reranker = TreeEnsemble.from_state_dict(tensors, features, "reranker.")
            except (KeyError, TypeError, ValueError) as err:
                raise CoderFormatError(
                    f"{folder / WEIGHTS_FILE}: the candidate reranker named in {CONFIG_FILE} is missing "
                    f"or damaged ({err})"
                ) from None
            features = tuple(coder.reranker.features)
            if features not in (RERANK_FEATURES, RERANK_FEATURES + RELATION_FEATURES):
                raise CoderFormatError(
                    f"{folder / CONFIG_FILE}: the reranker's features differ from this kgcode's "
                    f"({len(features)} vs {len(RERANK_FEATURES)} or "
                    f"{len(RERANK_FEATURES) + len(RELATION_FEATURES)}): retrain it"
                )
            if features != RERANK_FEATURES:
                try:
                    coder.relations = RelationTable.from_state_dict(tensors, len(coder.labels), "relations.")
                except (KeyError, TypeError, ValueError) as err:
                    raise CoderFormatError(
                        f"{folder / WEIGHTS_FILE}: the relation table the reranker reads is missing "
                        f"or damaged ({err})"
                    ) from None
        coder.load_trainable_state_dict(
            {
                k: v
                for k, v in tensors.items()
                if not k.startswith(("bank.", "lexicon.", "reranker.", "relations."))
            }
        )
        coder.bank = coder._bank_in_runtime_dtype(bank)
        coder.threshold = float(config.get("threshold", cfg.threshold))
        coder.card = _read_json(folder / CARD_FILE)
        coder.eval()
        logger.info("loaded coder from %s in %.2f s", folder, time.perf_counter() - start)
        return coder


def _note_groups(counts: Sequence[int], max_rows: int) -> Iterator[tuple[int, int, int, int]]:
    """Runs of consecutive notes with at most ``max_rows`` rows together (a longer note alone).

    Args:
        counts: each note's rows (its sentences), the notes' rows one after the other.
        max_rows: the most rows of a run of several notes.

    Yields:
        ``(first note, end note, first row, end row)`` of each run, in order.
    """
    lo = row = first = 0
    for i, n in enumerate(counts):
        if i > lo and row + n - first > max_rows:
            yield lo, i, first, row
            lo, first = i, row
        row += n
    if lo < len(counts):
        yield lo, len(counts), first, row


def _note_max(sim: Tensor, counts: Sequence[int], out: Tensor) -> None:
    """Each note's maximum over its own rows of ``sim``, written into ``out`` (notes without rows
    are left as they are).

    Shapes:
        sim: ``(sum(counts), c)``: the notes' rows one after the other; out: ``(len(counts), c)``.
    """
    pos = 0
    for i, n in enumerate(counts):
        if n:
            out[i] = sim[pos : pos + n].amax(0)
        pos += n


def _progress(it: Any, show: bool | None, desc: str) -> Any:
    from text_encoder.hf import show_progress

    if show_progress(show):
        from tqdm.auto import tqdm

        return tqdm(it, desc=desc, unit="batch")
    return it


def _write_json(path: Path, obj: Any) -> None:
    with path.open("w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, ensure_ascii=False, default=_json_default)
        fh.write("\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CoderFormatError(f"{path}: unreadable JSON ({err})") from None
    if not isinstance(data, dict):
        raise CoderFormatError(f"{path}: expected a JSON object")
    return data


def known_encoders() -> list[str]:
    """Registered text encoder names (for messages)."""
    return sorted(text_encoder_registry)
