"""Map codes between ICD-10-CM, ICD-9-CM and SNOMED CT, saying how each link was found.

Every target comes with a **kind**, a **score** in [0, 1] and its **provenance**:

``exact`` (score 1.0)
    A direct cross-reference. ICD <-> SNOMED CT: a Disease Ontology or Mondo concept that names
    both ids (:meth:`kg.graph.KnowledgeGraph.to_snomed`; provenance ``via``: the DOID/MONDO id,
    its label, both match types, the source), or an ``xref`` edge SCTID -> ICD that a licensed
    loader put in the KG: the SNOMED CT ICD-10-CM map refset
    (:class:`ontologies.snomed_rf2.SnomedRF2Source`, ``match="map_refset"``, with map group,
    priority, rule and advice) or a shared UMLS CUI
    (:class:`ontologies.umls_owlready.PyMedTerminoSource`, ``match="umls_cui"``).
``gem`` (1.0; x0.9 approximate, x0.8 combination, x0.7 when read from the GEM of the other direction)
    ICD-9-CM <-> ICD-10-CM through the CMS GEMs: the file of the asked direction first, the
    reverse file's edges read backwards as well (provenance ``reverse: true``), with the GEM
    flags. ICD-9-CM -> SNOMED CT (and SNOMED CT -> ICD-9-CM) also goes *through* ICD-10-CM:
    GEM to an ICD-10-CM code, then that code's ``exact``/``inherited`` SNOMED CT links (or the
    reverse). Such a target is kind ``gem`` (the step that makes it less than direct), its score
    the product of both steps, its provenance ``gem`` (the GEM edge and the ICD-10-CM code) plus
    ``then`` (the second step with its own kind).
``inherited`` (0.9 per level for a broader target; x0.7 for a narrower one)
    Through an ancestor (``relation: "broader"``: the target is broader than the code) or a
    descendant (``"narrower"``) that has an exact link, in the code's own hierarchy: ICD-10-CM
    or ICD-9-CM codes, and SNOMED CT concepts when a licensed loader added their ``is_a``
    hierarchy (ancestors only). Provenance: ``from`` (the code that carries the link), ``hops``,
    ``relation`` and that link's ``via``.
``predicted``
    From a trained predictor of ICD-10-CM -> SNOMED CT links (see :class:`SnomedPredictor`): its
    calibrated probability.

A target appears once, with its best kind (``exact`` > ``gem`` > ``inherited`` > ``predicted``,
then the higher score); the list is sorted by score, then kind, then id. SNOMED CT targets carry
no title (kgcode never shows SNOMED CT descriptions): the DO/Mondo label in the provenance says
what they are.

Example:
    >>> from kg import load_kg  # doctest: +SKIP
    >>> kg = load_kg("~/.cache/kgcode/kg")  # doctest: +SKIP
    >>> [(t.target, t.kind, t.score) for t in map_code(kg, "E11.9")][:1]  # doctest: +SKIP
    [('SCTID:44054006', 'inherited', 0.9)]
    >>> explain(map_code(kg, "E11")[0])  # doctest: +SKIP
    'via DOID:9352 type 2 diabetes mellitus (dbxref); via MONDO:0005148 type 2 diabetes mellitus (exact)'
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO, runtime_checkable

from kg.graph import gc_paused
from ontologies.codes import InvalidCodeError, canonical_system, standardize

if TYPE_CHECKING:
    from kg.graph import KnowledgeGraph

__all__ = [
    "BATCH_COLUMNS",
    "KINDS",
    "TARGET_SYSTEMS",
    "BatchRow",
    "BatchSummary",
    "Mapper",
    "MappingError",
    "MappingTarget",
    "SnomedPredictor",
    "explain",
    "map_batch",
    "map_code",
    "write_csv",
    "write_jsonl",
    "write_rows",
]

logger = logging.getLogger(__name__)

#: Kinds of link, best first.
KINDS: tuple[str, ...] = ("exact", "gem", "inherited", "predicted")
#: Systems a code can be mapped to (the names ``--to`` takes).
TARGET_SYSTEMS: tuple[str, ...] = ("SNOMEDCT", "ICD10CM", "ICD9CM")
#: Columns of a batch table, in order.
BATCH_COLUMNS: tuple[str, ...] = (
    "line", "input", "source", "target", "target_title", "kind", "score", "n_targets", "provenance",
    "note", "error",
)  # fmt: skip

#: Score factors (see the module docstring).
GEM_APPROXIMATE = 0.9
GEM_COMBINATION = 0.8
GEM_REVERSE = 0.7
INHERIT_DECAY = 0.9
NARROWER = 0.7

_KIND_RANK = {kind: i for i, kind in enumerate(KINDS)}
_ICD = ("ICD10CM", "ICD9CM")
_VIA = ("DOID", "MONDO")
_SYSTEM_NAMES = {"SCTID": "SNOMED CT", "ICD10CM": "ICD-10-CM", "ICD9CM": "ICD-9-CM"}
_GEM_FLAGS = ("approximate", "combination", "scenario", "choice_list", "no_map", "flags")
_GEM_DIRECTION = {"ICD9CM": "icd9_to_icd10", "ICD10CM": "icd10_to_icd9"}

Links = dict[str, list[dict[str, Any]]]
_NO_LINKS: Links = {}


class MappingError(ValueError):
    """A mapping that cannot be asked for: a code of a system kgcode does not map, or its own system."""


@runtime_checkable
class SnomedPredictor(Protocol):
    """What :func:`map_code` needs from a learned ICD-10-CM -> SNOMED CT link predictor.

    ``predict(code, top_k)`` gets an ICD-10-CM id (``ICD10CM:E11.9``) and returns at most
    ``top_k`` candidates, best first. Each candidate may be a ``(sctid, probability)`` or
    ``(sctid, probability, evidence_dict)`` tuple, a dict with ``sctid`` (or ``target``) and
    ``probability`` (or ``score``) plus any evidence keys, or an object with those attributes.
    Probabilities are expected calibrated, in [0, 1] (values outside are clipped). A code the
    model does not know may raise :class:`KeyError` or :class:`ValueError`: no prediction.
    """

    def predict(self, code: str, top_k: int) -> Iterable[Any]:
        """Candidate SNOMED CT ids of an ICD-10-CM code, best first."""
        ...


@dataclass(slots=True)
class MappingTarget:
    """One target of a mapping.

    Attributes:
        target: system-qualified id (``SCTID:44054006``, ``ICD10CM:E11.9``).
        target_title: the ICD code's title; always ``""`` for SNOMED CT ids.
        kind: ``exact``, ``gem``, ``inherited`` or ``predicted``.
        score: in [0, 1]: 1.0 for exact, lower the less direct the link.
        provenance: why (see the module docstring); JSON-ready.
    """

    target: str
    target_title: str
    kind: str
    score: float
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: target, target_title, kind, score (4 decimals), provenance."""
        return {
            "target": self.target,
            "target_title": self.target_title,
            "kind": self.kind,
            "score": round(self.score, 4),
            "provenance": self.provenance,
        }

    @property
    def label(self) -> str:
        """The DO/Mondo label that says what a SNOMED CT target is (or the ICD title)."""
        return self.target_title or _via_label(self.provenance)


# ---------------------------------------------------------------------------------- mapping


class Mapper:
    """Maps codes of one knowledge graph; keeps its indexes between calls (use one per batch).

    The ICD codes that carry an exact SNOMED CT link, and for each ICD code the descendants that
    carry one, are computed once, on first use (a fraction of a second on the full KG); each
    code's links are cached as they are looked up.

    Args:
        kg: the knowledge graph.
        predictor: a :class:`SnomedPredictor` for ``predicted`` ICD-10-CM -> SNOMED CT links.
    """

    def __init__(self, kg: KnowledgeGraph, *, predictor: SnomedPredictor | None = None) -> None:
        self.kg = kg
        self.predictor = predictor
        # The plain adjacency dicts (the layout kg.graph documents): networkx's views cost a
        # Python call per lookup, which shows when ~98,000 codes are mapped.
        self._nodes: dict[str, dict[str, Any]] = kg.graph._node
        self._succ: dict[str, dict[str, dict[str, Any]]] = kg.graph._succ
        self._pred: dict[str, dict[str, dict[str, Any]]] = kg.graph._pred
        self._linked: set[str] | None = None
        self._desc: dict[str, list[tuple[str, int]]] | None = None
        self._to_sct: dict[str, Links] = {}
        self._from_sct: dict[str, Links] = {}
        self._up: dict[str, list[tuple[str, int]]] = {}
        self._predictions: dict[str, list[Any]] = {}

    # -- entry point -------------------------------------------------------------------------

    def map(
        self, code: str, *, to: str | None = None, from_system: str | None = None, top_k: int = 10
    ) -> list[MappingTarget]:
        """Targets of one code, best first (see :func:`map_code`)."""
        node = self.resolve(code, from_system)
        return self.map_id(node, to=to, top_k=top_k)

    def resolve(self, code: str, from_system: str | None = None) -> str:
        """The node id of a code (see :meth:`kg.graph.KnowledgeGraph.resolve`), with a hint for bare SCTIDs.

        Raises:
            InvalidCodeError: malformed for its system (or a prefix contradicts ``from_system``).
            UnknownCodeError: not in the KG.
        """
        try:
            return self.kg.resolve(code, from_system)
        except InvalidCodeError as exc:
            bare = str(code).strip()
            if from_system is None and bare.isdigit() and len(bare) >= 6:
                raise InvalidCodeError(
                    f"{exc}; for a SNOMED CT id write SCTID:{bare} (or --from SNOMEDCT)"
                ) from None
            raise

    def map_id(
        self, node: str, *, to: str | None = None, top_k: int = 10, shared: bool = False
    ) -> list[MappingTarget]:
        """Targets of a node id of the KG, best first.

        Args:
            node: a node id of the KG (see :meth:`resolve`).
            to: the target system (see :func:`map_code`).
            top_k: the most targets.
            shared: return provenance that shares parts with the mapper's caches (faster; the
                caller must not change it).

        Returns:
            The targets.

        Raises:
            MappingError: the node's system cannot be mapped, or ``to`` is its own system.
        """
        source = self._nodes[node]["system"]
        target = default_target(source) if to is None else target_system(to)
        if source not in ("ICD10CM", "ICD9CM", "SCTID"):
            raise MappingError(f"cannot map {node}: kgcode maps ICD-10-CM, ICD-9-CM and SNOMED CT codes")
        if source == target:
            raise MappingError(f"{node} is already {_SYSTEM_NAMES[target]}: choose another --to")
        with gc_paused():
            found = self._collect(node, source, target, top_k)
            ranked = sorted(found.values(), key=lambda t: (-t.score, _KIND_RANK[t.kind], t.target))
            if not shared:  # provenance shares lists with the caches: hand out copies
                for t in ranked[: max(top_k, 0)]:
                    t.provenance = _copy(t.provenance)
        return ranked[: max(top_k, 0)]

    def _collect(self, node: str, source: str, target: str, top_k: int) -> dict[str, MappingTarget]:
        found: dict[str, MappingTarget] = {}
        if target == "SCTID":
            self._icd_to_sct(node, found)
            if source == "ICD9CM":
                self._chain_icd9_to_sct(node, found)
            elif self.predictor is not None:
                self._predicted(node, found, top_k)
        elif source == "SCTID":
            self._sct_to_icd(node, target, found)
            self._chain_sct_to_icd(node, target, found)
        else:
            for item in self._gem(node, target):
                _offer(found, item)
        return found

    def no_target_note(self, node: str, to: str | None = None) -> str:
        """Why a code has no target, in words (for batch tables)."""
        source = self._nodes[node]["system"]
        target = default_target(source) if to is None else target_system(to)
        attrs = self._nodes[node].get("attrs") or {}
        if source in _ICD and target in _ICD and attrs.get("gem_no_map"):
            return "no map: the CMS GEM says this code has no equivalent"
        return f"no {_SYSTEM_NAMES[target]} link found"

    # -- ICD -> SNOMED CT ----------------------------------------------------------------------

    def _icd_to_sct(self, node: str, found: dict[str, MappingTarget]) -> None:
        """Exact, then inherited (ancestors: broader; descendants: narrower) SNOMED CT links."""
        for sct, links in self._exact_to_sct(node).items():
            _offer(found, MappingTarget(sct, "", "exact", 1.0, {"via": links}))
        for anc, hops in self._ancestors(node):
            for sct, links in self._exact_to_sct(anc).items():
                _offer(found, self._inherited(sct, "", anc, hops, "broader", links))
        for desc, hops in self._descendant_links().get(node, ()):
            for sct, links in self._exact_to_sct(desc).items():
                _offer(found, self._inherited(sct, "", desc, hops, "narrower", links))

    def _chain_icd9_to_sct(self, node: str, found: dict[str, MappingTarget]) -> None:
        """ICD-9-CM -> (GEM) -> ICD-10-CM -> (exact or inherited) -> SNOMED CT, as kind ``gem``."""
        for gem in self._gem(node, "ICD10CM"):
            inner: dict[str, MappingTarget] = {}
            self._icd_to_sct(gem.target, inner)
            for item in inner.values():
                _offer(found, _chained(item, gem))

    def prefetch(self, nodes: Iterable[str], top_k: int = 10) -> None:
        """Ask the predictor for many ICD-10-CM codes at once (its ``predict_many``, when it has one).

        :func:`map_batch` calls this per chunk of input; single calls use ``predict``.

        Args:
            nodes: node ids; the ICD-10-CM ones are sent (their answers replace the previous chunk's).
            top_k: candidates per code.
        """
        many = getattr(self.predictor, "predict_many", None)
        wanted = [n for n in dict.fromkeys(nodes) if n.startswith("ICD10CM:")]
        self._predictions = {}  # only the current chunk's are kept
        if not callable(many) or not wanted:
            return
        try:
            results = many(wanted, top_k=top_k)
        except (KeyError, ValueError) as exc:
            logger.debug("predict_many failed (%s): asking code by code", exc)
            return
        for node in wanted:
            self._predictions[node] = list(results.get(node) or [])

    def _predicted(self, node: str, found: dict[str, MappingTarget], top_k: int) -> None:
        assert self.predictor is not None
        raw = self._predictions.get(node)
        if raw is None:
            try:
                raw = list(self.predictor.predict(node, top_k))
            except (KeyError, ValueError) as exc:
                logger.debug("predictor has no prediction for %s: %s", node, exc)
                return
        model = str(getattr(self.predictor, "name", "") or "the graph model")
        threshold = getattr(self.predictor, "threshold", None)
        for item in raw[: max(top_k, 0)]:
            parsed = _prediction(item)
            if parsed is None:
                logger.debug("ignored a malformed prediction for %s: %r", node, item)
                continue
            sct, prob, evidence = parsed
            if sct not in self._nodes:
                continue
            provenance: dict[str, Any] = {"model": model, "probability": round(prob, 4)}
            if isinstance(threshold, (int, float)):
                provenance["threshold"] = round(float(threshold), 4)
                provenance["likely"] = prob >= threshold
            provenance.update(evidence)
            _offer(found, MappingTarget(sct, "", "predicted", prob, provenance))

    # -- SNOMED CT -> ICD ----------------------------------------------------------------------

    def _sct_to_icd(self, node: str, system: str, found: dict[str, MappingTarget]) -> None:
        """Exact links, then those of the concept's SNOMED CT ancestors (the ICD code is broader)."""
        for icd, links in self._exact_from_sct(node).items():
            if icd.startswith(system + ":"):
                _offer(found, MappingTarget(icd, self._title(icd), "exact", 1.0, {"via": links}))
        for anc, hops in self._ancestors(node):
            for icd, links in self._exact_from_sct(anc).items():
                if icd.startswith(system + ":"):
                    _offer(found, self._inherited(icd, self._title(icd), anc, hops, "broader", links))

    def _chain_sct_to_icd(self, node: str, system: str, found: dict[str, MappingTarget]) -> None:
        """SNOMED CT -> the other ICD system -> (GEM) -> ``system``, as kind ``gem``."""
        other = "ICD10CM" if system == "ICD9CM" else "ICD9CM"
        inner: dict[str, MappingTarget] = {}
        self._sct_to_icd(node, other, inner)
        for first in inner.values():
            for gem in self._gem(first.target, system):
                _offer(found, _chained(first, gem, order="then_gem"))

    # -- ICD <-> ICD ---------------------------------------------------------------------------

    def _gem(self, node: str, system: str) -> list[MappingTarget]:
        """GEM targets of an ICD code in the other ICD system: asked direction first, then reverse."""
        source = self._nodes[node]["system"]
        asked = _GEM_DIRECTION.get(source, "")
        out: list[MappingTarget] = []
        for adj, reverse in ((self._succ, False), (self._pred, True)):
            for other, keys in adj[node].items():
                data = keys.get("gem_equivalent")
                if data is None or self._nodes[other]["system"] != system:
                    continue
                attrs = data.get("attrs") or {}
                direction = attrs.get("direction") or (_GEM_DIRECTION.get(system, "") if reverse else asked)
                score = 1.0
                if attrs.get("approximate"):
                    score *= GEM_APPROXIMATE
                if attrs.get("combination"):
                    score *= GEM_COMBINATION
                if reverse:
                    score *= GEM_REVERSE
                provenance = {"direction": direction, "reverse": reverse}
                provenance.update({k: attrs[k] for k in _GEM_FLAGS if k in attrs})
                out.append(MappingTarget(other, self._title(other), "gem", score, provenance))
        return out

    # -- indexes -------------------------------------------------------------------------------

    def _title(self, node: str) -> str:
        data = self._nodes[node]
        return "" if data["system"] == "SCTID" else str(data.get("title") or "")

    def _inherited(
        self, target: str, title: str, carrier: str, hops: int, relation: str, links: list[dict[str, Any]]
    ) -> MappingTarget:
        score = INHERIT_DECAY**hops * (NARROWER if relation == "narrower" else 1.0)
        provenance = {
            "from": carrier,
            "from_title": self._title(carrier),
            "hops": hops,
            "relation": relation,
            "via": links,
        }
        return MappingTarget(target, title, "inherited", score, provenance)

    def _parents(self, node: str) -> list[str]:
        return sorted(p for p, keys in self._succ[node].items() if "is_a" in keys)

    def _ancestors(self, node: str) -> list[tuple[str, int]]:
        """``(ancestor, hops)`` over ``is_a`` within the node's system, nearest first."""
        cached = self._up.get(node)
        if cached is not None:
            return cached
        system = self._nodes[node]["system"]
        seen = {node}
        out: list[tuple[str, int]] = []
        frontier = [node]
        hops = 0
        while frontier:
            hops += 1
            level: list[str] = []
            for item in frontier:
                for parent in self._parents(item):
                    if parent not in seen and self._nodes[parent]["system"] == system:
                        seen.add(parent)
                        level.append(parent)
                        out.append((parent, hops))
            frontier = level
        if system in _ICD:  # a few per code; SNOMED CT's (tens to hundreds each) are not kept
            self._up[node] = out
        return out

    def _linked_icd(self) -> set[str]:
        """ICD codes with at least one exact SNOMED CT link (one pass over the xref edges)."""
        if self._linked is None:
            with gc_paused():
                self._linked = self._find_linked()
        return self._linked

    def _find_linked(self) -> set[str]:
        nodes = self._nodes
        candidates: set[str] = set()
        for node, nbrs in self._succ.items():
            system = nodes[node]["system"]
            if system not in _VIA and system != "SCTID":
                continue
            for other, keys in nbrs.items():
                if "xref" in keys and nodes[other]["system"] in _ICD:
                    candidates.add(other)
        return {c for c in candidates if self._exact_to_sct(c, check=False)}

    def _descendant_links(self) -> dict[str, list[tuple[str, int]]]:
        """For each ICD code, its descendants with an exact link and how far down they are."""
        if self._desc is None:
            index: dict[str, list[tuple[str, int]]] = {}
            for linked in sorted(self._linked_icd()):
                for anc, hops in self._ancestors(linked):
                    index.setdefault(anc, []).append((linked, hops))
            self._desc = index
        return self._desc

    def _exact_to_sct(self, icd: str, *, check: bool = True) -> Links:
        """SNOMED CT id -> links (DO/Mondo via, map refset, UMLS CUI) of one ICD code."""
        cached = self._to_sct.get(icd)
        if cached is not None:
            return cached
        if check and icd not in self._linked_icd():
            return {}
        out: Links = {}
        for link in self.kg.to_snomed(icd):
            out.setdefault(link["sctid"], []).append(_via_link(link))
        for sct, keys in self._pred[icd].items():
            data = keys.get("xref")
            if data is not None and self._nodes[sct]["system"] == "SCTID":
                out.setdefault(sct, []).append(_licensed_link(data))
        for links in out.values():
            links.sort(key=_link_order)
        self._to_sct[icd] = out or _NO_LINKS
        return self._to_sct[icd]

    def _exact_from_sct(self, sct: str) -> Links:
        """ICD id -> links of one SNOMED CT id."""
        cached = self._from_sct.get(sct)
        if cached is not None:
            return cached
        out: Links = {}
        for link in self.kg.from_snomed(sct):
            out.setdefault(link["code"], []).append(_via_link(link))
        for icd, keys in self._succ[sct].items():
            data = keys.get("xref")
            if data is not None and self._nodes[icd]["system"] in _ICD:
                out.setdefault(icd, []).append(_licensed_link(data))
        for links in out.values():
            links.sort(key=_link_order)
        # map refset order (group, priority) first, then ids; one shared empty dict for the many
        # SNOMED CT concepts without a link (never changed)
        ordered = (
            dict(sorted(out.items(), key=lambda kv: (_link_order(kv[1][0]), kv[0]))) if out else _NO_LINKS
        )
        self._from_sct[sct] = ordered
        return ordered


def map_code(
    kg: KnowledgeGraph,
    code: str,
    *,
    to: str | None = "SNOMEDCT",
    from_system: str | None = None,
    top_k: int = 10,
    predictor: SnomedPredictor | None = None,
) -> list[MappingTarget]:
    """Map one code to another system: ranked targets, each with kind, score and provenance.

    For many codes use :func:`map_batch` or one :class:`Mapper` (it keeps its indexes).

    Args:
        kg: the knowledge graph.
        code: the code in any spelling; a prefix names its system (``ICD9CM:250.00``,
            ``SCTID:44054006``), a bare code is ICD-10-CM unless ``from_system`` says otherwise.
        to: ``SNOMEDCT``, ``ICD10CM`` or ``ICD9CM`` (aliases accepted); ``None`` picks by the
            code's system: SNOMED CT for ICD-10-CM, ICD-10-CM for ICD-9-CM and SNOMED CT.
        from_system: the system of a bare code (``ICD9CM``, ``SNOMEDCT`` ...).
        top_k: the most targets returned.
        predictor: a :class:`SnomedPredictor` for ``predicted`` ICD-10-CM -> SNOMED CT targets.

    Returns:
        The targets, best first (at most ``top_k``); empty when nothing links the code.

    Raises:
        InvalidCodeError: the code is malformed for its system, its prefix contradicts
            ``from_system``, or an SCTID fails its Verhoeff check.
        UnknownCodeError: the code is not in the KG.
        MappingError: ``to`` is the code's own system, or the code is not ICD/SNOMED CT.
    """
    return Mapper(kg, predictor=predictor).map(code, to=to, from_system=from_system, top_k=top_k)


def target_system(to: str) -> str:
    """The KG system name of a ``--to`` value (``SNOMEDCT`` -> ``SCTID``).

    Raises:
        MappingError: not SNOMED CT, ICD-10-CM or ICD-9-CM.
    """
    try:
        system = canonical_system(to)
    except InvalidCodeError:
        system = ""
    if system not in _SYSTEM_NAMES:
        raise MappingError(f"cannot map to {to!r}: expected one of {', '.join(TARGET_SYSTEMS)}")
    return system


def default_target(source: str) -> str:
    """The target system when none is asked: SNOMED CT for ICD-10-CM, else ICD-10-CM."""
    return "SCTID" if source == "ICD10CM" else "ICD10CM"


def _offer(found: dict[str, MappingTarget], item: MappingTarget) -> None:
    old = found.get(item.target)
    if old is None or (_KIND_RANK[item.kind], -item.score) < (_KIND_RANK[old.kind], -old.score):
        found[item.target] = item


def _chained(item: MappingTarget, gem: MappingTarget, order: str = "gem_then") -> MappingTarget:
    """A two-step target: a GEM edge and an exact/inherited link, as kind ``gem``."""
    step = {"kind": item.kind, "score": round(item.score, 4), **item.provenance}
    if order == "gem_then":  # ICD-9-CM -> GEM -> ICD-10-CM -> link -> SNOMED CT
        provenance = {"gem": {"to": gem.target, "to_title": gem.target_title, **gem.provenance}, "then": step}
        return MappingTarget(item.target, item.target_title, "gem", gem.score * item.score, provenance)
    # SNOMED CT -> link -> ICD code -> GEM -> ICD code of the other system
    provenance = {"first": {"to": item.target, "to_title": item.target_title, **step}, "gem": gem.provenance}
    return MappingTarget(gem.target, gem.target_title, "gem", gem.score * item.score, provenance)


def _via_link(link: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "xref",
        "id": link["via"],
        "label": link["via_label"],
        "icd_match": link["icd_match"],
        "snomed_match": link["snomed_match"],
        "source": link["source"],
    }


def _licensed_link(data: dict[str, Any]) -> dict[str, Any]:
    attrs = data.get("attrs") or {}
    match = str(attrs.get("match") or "xref")
    source = data.get("source", "")
    if match == "map_refset":
        refset = str(attrs.get("refset", ""))
        link: dict[str, Any] = {
            "type": "map_refset",
            "label": f"SNOMED CT ICD-10 map refset {refset}",
            "refset": refset,
        }
        for key in ("map_group", "map_priority", "map_rule", "map_advice", "map_rules"):
            if key in attrs:
                link[key] = attrs[key]
        link["source"] = source
        return link
    if match in ("umls_cui", "umls_mapped_to"):
        cuis = list(attrs.get("cuis") or [])
        label = f"UMLS CUI {', '.join(cuis)}" if cuis else "UMLS mapped_to"
        return {
            "type": match,
            "label": label,
            "cuis": cuis,
            "umls_terminologies": list(attrs.get("umls_terminologies") or []),
            "source": source,
        }
    return {"type": match, "label": f"{source or 'licensed'} cross-reference ({match})", "source": source}


def _link_order(link: dict[str, Any]) -> tuple[int, int, int, str]:
    kind = {"map_refset": 0, "umls_cui": 1, "umls_mapped_to": 1}.get(link.get("type", ""), 2)
    group = link.get("map_group", 0)
    priority = link.get("map_priority", 0)
    return (
        kind,
        group if isinstance(group, int) else 0,
        priority if isinstance(priority, int) else 0,
        str(link.get("id", "")),
    )


def _prediction(item: Any) -> tuple[str, float, dict[str, Any]] | None:
    """``(sctid, probability, evidence)`` from one predictor output, or ``None``."""
    evidence: dict[str, Any] = {}
    if isinstance(item, MappingTarget):
        sct, prob, evidence = item.target, item.score, dict(item.provenance)
    elif isinstance(item, dict):
        sct = item.get("sctid") or item.get("target") or item.get("id")
        prob = item.get("probability", item.get("score"))
        evidence = {
            k: v for k, v in item.items() if k not in ("sctid", "target", "id", "probability", "score")
        }
    elif isinstance(item, (tuple, list)) and len(item) >= 2:
        sct, prob = item[0], item[1]
        if len(item) > 2 and isinstance(item[2], dict):
            evidence = dict(item[2])
    else:
        sct = getattr(item, "sctid", None) or getattr(item, "target", None)
        prob = getattr(item, "probability", getattr(item, "score", None))
    try:
        sctid = standardize(str(sct), "SCTID")
        value = float(prob)  # type: ignore[arg-type]
    except (InvalidCodeError, TypeError, ValueError):
        return None
    if value != value:  # NaN
        return None
    evidence.pop("kind", None)
    return sctid, min(max(value, 0.0), 1.0), evidence


def _via_label(provenance: dict[str, Any]) -> str:
    for key in ("via", "links"):
        for link in provenance.get(key) or ():
            if isinstance(link, dict) and link.get("type") == "xref" and link.get("label"):
                return str(link["label"])
    for key in ("then", "first"):
        inner = provenance.get(key)
        if isinstance(inner, dict):
            label = _via_label(inner)
            if label:
                return label
    label = provenance.get("via_label") or provenance.get("label")
    return str(label) if label else ""


# ---------------------------------------------------------------------------------- in words


def explain(target: MappingTarget | dict[str, Any]) -> str:
    """A target's provenance in words, e.g. ``via DOID:9352 type 2 diabetes mellitus (dbxref)``.

    Args:
        target: a :class:`MappingTarget` or its :meth:`~MappingTarget.to_dict`.

    Returns:
        One line.
    """
    if isinstance(target, MappingTarget):
        kind, provenance = target.kind, target.provenance
    else:
        kind, provenance = str(target.get("kind", "")), dict(target.get("provenance") or {})
    return _explain(kind, provenance)


def _explain(kind: str, p: dict[str, Any]) -> str:
    if kind == "exact":
        return _explain_links(p.get("via") or [])
    if kind == "inherited":
        hops = int(p.get("hops", 0))
        carrier = str(p.get("from", ""))
        relation = str(p.get("relation", ""))
        where = f"{hops} level{'s' if hops != 1 else ''} {'up' if relation == 'broader' else 'down'}"
        if carrier.startswith("SCTID:"):
            where += " in SNOMED CT"
            what = f"ICD code {relation}"
        else:
            what = f"SNOMED concept {relation}"
        title = f" {p['from_title']}" if p.get("from_title") else ""
        return (
            f"inherited from {carrier}{title} ({where}, {what}) {_explain_links(p.get('via') or [])}".strip()
        )
    if kind == "gem":
        if "then" in p:
            gem = p.get("gem") or {}
            then = p["then"]
            return (
                f"GEM to {gem.get('to', '')} {_explain_gem(gem)}, then {_explain(then.get('kind', ''), then)}"
            )
        if "first" in p:
            first = p["first"]
            step = _explain(str(first.get("kind", "")), first)
            gem_words = _explain_gem(p.get("gem") or {})
            return f"{first.get('kind', '')} to {first.get('to', '')} ({step}), then GEM {gem_words}"
        return f"GEM {_explain_gem(p)}"
    if kind == "predicted":
        via = f" via {p['via']} {p.get('via_label', '')}".rstrip() if isinstance(p.get("via"), str) else ""
        detail = f"p={float(p.get('probability', 0)):.2f}"
        if "threshold" in p:
            detail += (
                f", {'above' if p.get('likely') else 'below'} the calibrated threshold {p['threshold']:.2f}"
            )
        return f"predicted by {p.get('model', 'the graph model')} ({detail}){via}"
    return json.dumps(p, sort_keys=True)


def _explain_links(links: list[dict[str, Any]]) -> str:
    parts = []
    for link in links:
        kind = link.get("type")
        if kind == "xref":
            matches = sorted({str(link.get("icd_match", "")), str(link.get("snomed_match", ""))} - {""})
            parts.append(f"via {link.get('id', '')} {link.get('label', '')} ({'/'.join(matches)})")
        elif kind == "map_refset":
            rule = link.get("map_rule", "")
            detail = f"group {link.get('map_group', '?')}, priority {link.get('map_priority', '?')}"
            parts.append(
                f"via {link.get('label', 'SNOMED CT map refset')} ({detail}{', ' + rule if rule else ''})"
            )
        else:
            terms = ", ".join(link.get("umls_terminologies") or [])
            parts.append(f"via {link.get('label', kind)}{f' ({terms})' if terms else ''}")
    return "; ".join(parts)


def _explain_gem(p: dict[str, Any]) -> str:
    flags = [name for name in ("approximate", "combination") if p.get(name)]
    if p.get("scenario"):
        flags.append(f"scenario {p['scenario']}, choice list {p.get('choice_list', '?')}")
    direction = str(p.get("direction", "")).replace("_", " ")
    where = f"{direction} file read backwards" if p.get("reverse") else direction
    return f"({', '.join([where, *flags]) if where else ', '.join(flags)})"


# ---------------------------------------------------------------------------------- batches


@dataclass(slots=True)
class BatchRow:
    """One input line of a batch and its best target (or why there is none).

    Attributes:
        line: the input line number (1-based).
        input: the code as written.
        source: its system-qualified id (empty when the code is bad).
        target, target_title, kind, score, provenance: the best target (empty when none).
        n_targets: how many targets the code has (at most ``top_k``).
        note: why there is no target (``no SNOMED CT link found``, a GEM no-map).
        error: the problem with a bad row (malformed, unknown or mismatched code).
    """

    line: int
    input: str
    source: str = ""
    target: str = ""
    target_title: str = ""
    kind: str = ""
    score: float | None = None
    n_targets: int = 0
    provenance: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    error: str = ""

    @property
    def mapped(self) -> bool:
        """Whether the row has a target."""
        return bool(self.target)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with the columns of :data:`BATCH_COLUMNS`."""
        return {
            "line": self.line,
            "input": self.input,
            "source": self.source,
            "target": self.target,
            "target_title": self.target_title,
            "kind": self.kind,
            "score": None if self.score is None else round(self.score, 4),
            "n_targets": self.n_targets,
            "provenance": self.provenance,
            "note": self.note,
            "error": self.error,
        }

    def csv_row(self) -> list[str]:
        """The row as CSV fields (provenance as compact JSON)."""
        d = self.to_dict()
        d["provenance"] = (
            json.dumps(self.provenance, sort_keys=True, separators=(",", ":")) if self.provenance else ""
        )
        d["score"] = "" if d["score"] is None else f"{d['score']:.4f}"
        return [str(d[c]) for c in BATCH_COLUMNS]


@dataclass
class BatchSummary:
    """What a batch did: rows, mapped rows, rows without target, bad rows, targets per kind."""

    rows: int = 0
    mapped: int = 0
    no_target: int = 0
    errors: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, row: BatchRow) -> None:
        """Count one row."""
        self.rows += 1
        if row.error:
            self.errors += 1
        elif row.mapped:
            self.mapped += 1
            self.by_kind[row.kind] += 1
        else:
            self.no_target += 1


def map_batch(
    kg: KnowledgeGraph,
    codes: Iterable[str],
    *,
    to: str | None = "SNOMEDCT",
    from_system: str | None = None,
    top_k: int = 10,
    predictor: SnomedPredictor | None = None,
    progress: bool | None = None,
) -> Iterator[BatchRow]:
    """Map many codes: one row per non-blank input line, with its best target or its error.

    Blank lines and lines starting with ``#`` are skipped (line numbers still count them). A bad
    code (malformed, of another system than ``from_system``, an SCTID with a bad check digit, not
    in the KG, or not mappable to ``to``) gives a row with ``error`` set; the others still map.
    One :class:`Mapper` serves the whole batch, so the links of shared ancestors and the
    descendant index are computed once (all ~98,000 ICD-10-CM codes map in seconds).

    Args:
        kg: the knowledge graph.
        codes: the lines of the input (codes, one a line).
        to: the target system (see :func:`map_code`); ``None`` picks per code.
        from_system: the system of bare codes.
        top_k: how many targets to rank per code (``n_targets`` counts them; the row keeps the best).
        predictor: a :class:`SnomedPredictor` for ``predicted`` targets.
        progress: show a progress bar (``None``: only when stderr is a terminal).

    Yields:
        One :class:`BatchRow` per code, in input order.
    """
    from tqdm.auto import tqdm

    from kg.build import show_progress

    mapper = Mapper(kg, predictor=predictor)
    total = len(codes) if isinstance(codes, (list, tuple)) else None
    bar = tqdm(
        codes, total=total, desc="map", unit=" codes", disable=not show_progress(progress), leave=False
    )
    chunk: list[BatchRow] = []
    try:
        for line_no, raw in enumerate(bar, start=1):
            text = str(raw).strip()
            if not text or text.startswith("#"):
                continue
            chunk.append(BatchRow(line=line_no, input=text))
            if len(chunk) >= _CHUNK:
                yield from _map_chunk(mapper, chunk, to, from_system, top_k)
                chunk = []
        yield from _map_chunk(mapper, chunk, to, from_system, top_k)
    finally:
        bar.close()


_CHUNK = 512  # rows resolved (and sent to the predictor) at a time


def _map_chunk(
    mapper: Mapper, rows: list[BatchRow], to: str | None, from_system: str | None, top_k: int
) -> Iterator[BatchRow]:
    from kg.errors import UnknownCodeError

    errors = (InvalidCodeError, UnknownCodeError, MappingError)
    for row in rows:
        try:
            row.source = mapper.resolve(row.input, from_system)
        except errors as exc:
            row.error = str(exc).splitlines()[0]
    if mapper.predictor is not None and (to is None or _is_snomed(to)):
        mapper.prefetch([r.source for r in rows if r.source.startswith("ICD10CM:")], top_k)
    for row in rows:
        if row.error:
            yield row
            continue
        try:
            targets = mapper.map_id(row.source, to=to, top_k=top_k, shared=True)
        except errors as exc:
            row.error = str(exc).splitlines()[0]
            yield row
            continue
        row.n_targets = len(targets)
        if targets:
            best = targets[0]
            row.target, row.target_title, row.kind = best.target, best.target_title, best.kind
            row.score, row.provenance = best.score, _copy(best.provenance)
        else:
            row.note = mapper.no_target_note(row.source, to)
        yield row


def _copy(value: Any) -> Any:
    """A copy of nested dicts and lists (provenance is small: faster than ``copy.deepcopy``)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _is_snomed(to: str) -> bool:
    try:
        return target_system(to) == "SCTID"
    except MappingError:
        return False


def write_rows(
    rows: Iterable[BatchRow],
    out: str | Path | TextIO,
    *,
    fmt: str | None = None,
    on_row: Callable[[BatchRow], None] | None = None,
) -> BatchSummary:
    """Write a batch table as CSV or JSONL; a file is written atomically (temp file + rename).

    Args:
        rows: the rows (e.g. from :func:`map_batch`).
        out: a path, or an open text stream (e.g. ``sys.stdout``).
        fmt: ``csv`` or ``jsonl``; ``None`` takes it from the path's suffix (``.jsonl``/``.json``
            is JSONL, anything else CSV; CSV for a stream).
        on_row: called with each row as it is written (to report errors as they come).

    Returns:
        The counts.
    """
    start = time.perf_counter()
    if fmt is None:
        suffix = Path(out).suffix.lower() if isinstance(out, (str, Path)) else ""
        fmt = "jsonl" if suffix in (".jsonl", ".json", ".ndjson") else "csv"
    if fmt not in ("csv", "jsonl"):
        raise ValueError(f"unknown batch format {fmt!r}: expected csv or jsonl")
    summary = BatchSummary()
    if not isinstance(out, (str, Path)):
        _write(rows, out, fmt, summary, on_row)
        summary.seconds = time.perf_counter() - start
        return summary
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            _write(rows, fh, fmt, summary, on_row)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    summary.seconds = time.perf_counter() - start
    return summary


def write_csv(rows: Iterable[BatchRow], out: str | Path | TextIO, **kwargs: Any) -> BatchSummary:
    """Write a batch table as CSV (columns :data:`BATCH_COLUMNS`); see :func:`write_rows`."""
    return write_rows(rows, out, fmt="csv", **kwargs)


def write_jsonl(rows: Iterable[BatchRow], out: str | Path | TextIO, **kwargs: Any) -> BatchSummary:
    """Write a batch table as JSON lines (one :meth:`BatchRow.to_dict` a line); see :func:`write_rows`."""
    return write_rows(rows, out, fmt="jsonl", **kwargs)


def _write(
    rows: Iterable[BatchRow],
    fh: TextIO,
    fmt: str,
    summary: BatchSummary,
    on_row: Callable[[BatchRow], None] | None,
) -> None:
    writer = csv.writer(fh, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(BATCH_COLUMNS)
    for row in rows:
        if writer is not None:
            writer.writerow(row.csv_row())
        else:
            fh.write(json.dumps(row.to_dict(), ensure_ascii=False) + "\n")
        summary.add(row)
        if on_row is not None:
            on_row(row)
