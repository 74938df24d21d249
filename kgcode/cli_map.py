"""``kgcode map``: map codes between ICD-10-CM, ICD-9-CM and SNOMED CT, one or a file of them."""

from __future__ import annotations

import importlib
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kgcode.cli_common import kg_option, load_kg_option

if TYPE_CHECKING:
    from kg.graph import KnowledgeGraph
    from kgcode.mapping import BatchRow, MappingTarget, SnomedPredictor

__all__ = ["load_predictor", "map_command"]

logger = logging.getLogger(__name__)

_PREDICTOR_MODULE = "kgcode.snomed_predictor"
_NAMES = {"SCTID": "SNOMED CT", "ICD10CM": "ICD-10-CM", "ICD9CM": "ICD-9-CM"}


def load_predictor(kg: KnowledgeGraph) -> SnomedPredictor | None:
    """The default ICD-10-CM -> SNOMED CT predictor, or ``None`` (one INFO line says why).

    Uses ``kgcode.snomed_predictor.load_default_predictor(kg)`` when that module exists.

    Args:
        kg: the knowledge graph the predictor works on.

    Returns:
        The predictor, or ``None`` when there is no module, no loader or no trained model.
    """
    try:
        module = importlib.import_module(_PREDICTOR_MODULE)
    except ImportError as exc:
        logger.info("no SNOMED CT predictor (%s): 'predicted' links are left out", exc)
        return None
    loader = getattr(module, "load_default_predictor", None)
    if not callable(loader):
        logger.info("%s has no load_default_predictor(): 'predicted' links are left out", _PREDICTOR_MODULE)
        return None
    try:
        predictor = loader(kg)
    except Exception as exc:  # a broken model must not stop the known links from being shown
        logger.warning("could not load the SNOMED CT predictor (%s): 'predicted' links are left out", exc)
        return None
    if predictor is None:
        logger.info(
            "no trained SNOMED CT predictor: 'predicted' links are left out "
            "(train one with `kgcode train-linker`, once, a few minutes)"
        )
    return predictor


def _table(source: str, title: str, to: str, targets: list[MappingTarget]) -> str:
    from kgcode.mapping import explain

    lines = [
        f"{source}  {title}".rstrip(),
        f"  -> {_NAMES.get(to, to)}"
        + (" (identifiers only; labels are the DO/Mondo concepts')" if to == "SCTID" else ""),
    ]
    rows = [(t.target, t.label, t.kind, f"{t.score:.2f}", explain(t)) for t in targets]
    head = ("target", "title / label", "kind", "score", "provenance")
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) for i in range(2)]
    widths[1] = min(widths[1], 48)
    fmt = f"  {{:<{widths[0]}}}  {{:<{widths[1]}}}  {{:<9}}  {{:>5}}  {{}}"
    lines.append(fmt.format(*head))
    for target, label, kind, score, words in rows:
        if len(label) > widths[1]:
            label = label[: widths[1] - 3] + "..."
        lines.append(fmt.format(target, label, kind, score, words))
    return "\n".join(lines)


def _open_batch(batch: str) -> tuple[list[str], str]:
    """The lines of the batch file (``-``: stdin) and its name for messages."""
    if batch == "-":
        return [line.rstrip("\r\n") for line in sys.stdin], "stdin"
    path = Path(batch)
    if path.is_dir():
        raise click.BadParameter(f"{batch} is a folder, not a file of codes", param_hint="--batch")
    with path.open(encoding="utf-8-sig", errors="replace") as fh:
        return [line.rstrip("\r\n") for line in fh], str(path)


@click.command("map")
@click.argument("code", required=False)
@click.option(
    "--to",
    "to",
    type=click.Choice(["SNOMEDCT", "ICD10CM", "ICD9CM"], case_sensitive=False),
    default=None,
    help="Target system (default: SNOMEDCT for ICD-10-CM codes, ICD10CM for ICD-9-CM and SNOMED CT).",
)
@click.option(
    "--from",
    "from_system",
    default=None,
    metavar="SYSTEM",
    help="System of bare codes: ICD10CM (default), ICD9CM or SNOMEDCT.",
)
@click.option(
    "--top-k", default=10, show_default=True, type=click.IntRange(1, 1000), help="The most targets per code."
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="JSON: a list of targets (one code), or JSON lines (a batch on stdout).",
)
@click.option(
    "--batch",
    default=None,
    metavar="FILE",
    help="A file of codes, one a line ('-' for stdin): one table row per code.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the batch table: FILE.csv or FILE.jsonl (default: stdout).",
)
@click.option("--no-predicted", is_flag=True, help="Leave out 'predicted' links (no model is loaded).")
@kg_option
@click.pass_context
def map_command(
    ctx: click.Context,
    code: str | None,
    to: str | None,
    from_system: str | None,
    top_k: int,
    as_json: bool,
    batch: str | None,
    out: Path | None,
    no_predicted: bool,
    kg_dir: Path | None,
) -> None:
    """Map CODE between ICD-10-CM, ICD-9-CM and SNOMED CT, with the kind and evidence of each link.

    CODE may name its system (ICD9CM:250.00, SCTID:44054006, ICD10CM:E11.9); a bare code is
    ICD-10-CM unless --from says otherwise. Kinds: exact (a DO/Mondo cross-reference, or the
    SNOMED CT map refset / UMLS when the KG has them), gem (CMS GEMs), inherited (through an
    ancestor or descendant with an exact link) and predicted (the graph model, when trained).
    SNOMED CT ids are shown without descriptions.

    With --batch FILE each line is a code; bad rows are reported on stderr ("line 3: ...") and
    the others still mapped. The exit code is 2 only when no code of the file could be read.
    """
    from kgcode.mapping import Mapper, MappingError

    if (code is None) == (batch is None):
        raise click.UsageError("give one CODE or --batch FILE")
    if out is not None and batch is None:
        raise click.UsageError("--out is for --batch")
    if from_system is not None:
        from ontologies.codes import canonical_system

        canonical_system(from_system)  # an unknown system is one error, not one per row
    target = None
    if to is not None:
        from kgcode.mapping import target_system

        target = target_system(to)
    lines: list[str] = []
    name = ""
    if batch is not None:  # read the file before loading the KG: a missing file fails fast
        lines, name = _open_batch(batch)
        if not any(line.strip() and not line.strip().startswith("#") for line in lines):
            click.echo(f"kgcode: error: {name} has no codes (empty file)", err=True)
            ctx.exit(2)
    graph = load_kg_option(kg_dir)
    predictor = None
    if not no_predicted and target in (None, "SCTID"):
        predictor = load_predictor(graph)
    if batch is not None:
        _run_batch(ctx, graph, lines, name, target, from_system, top_k, predictor, out, as_json)
        return
    assert code is not None
    mapper = Mapper(graph, predictor=predictor)
    node = mapper.resolve(code, from_system)
    try:
        targets = mapper.map_id(node, to=target, top_k=top_k)
    except MappingError as exc:
        click.echo(f"kgcode: error: {exc}", err=True)
        ctx.exit(2)
    if as_json:
        click.echo(json.dumps([t.to_dict() for t in targets], indent=2))
        return
    system = graph.graph.nodes[node]["system"]
    to_system = target or ("SCTID" if system == "ICD10CM" else "ICD10CM")
    if not targets:
        click.echo(f"{node}: {mapper.no_target_note(node, target)}", err=True)
        return
    title = "" if system == "SCTID" else graph.graph.nodes[node].get("title", "")
    click.echo(_table(node, title, to_system, targets))


def _run_batch(
    ctx: click.Context,
    graph: KnowledgeGraph,
    lines: list[str],
    name: str,
    target: str | None,
    from_system: str | None,
    top_k: int,
    predictor: SnomedPredictor | None,
    out: Path | None,
    as_json: bool,
) -> None:
    from kgcode.mapping import map_batch, write_rows

    progress = getattr(ctx.find_root().obj, "progress", None)
    quiet = bool(getattr(ctx.find_root().obj, "quiet", False))

    def report(row: BatchRow) -> None:
        if row.error:
            click.echo(f"line {row.line}: {row.error}", err=True)

    rows = map_batch(
        graph, lines, to=target, from_system=from_system, top_k=top_k, predictor=predictor, progress=progress
    )
    fmt = None if out is not None else ("jsonl" if as_json else "csv")
    summary = write_rows(rows, out if out is not None else sys.stdout, fmt=fmt, on_row=report)
    if not quiet:
        kinds = ", ".join(f"{kind} {n:,}" for kind, n in summary.by_kind.most_common())
        where = f" -> {out}" if out is not None else ""
        click.echo(
            f"mapped {summary.mapped:,} of {summary.rows:,} codes from {name}"
            f"{f' ({kinds})' if kinds else ''}; {summary.no_target:,} without a target, "
            f"{summary.errors:,} bad row(s){where} in {summary.seconds:.1f} s",
            err=True,
        )
    if summary.rows == summary.errors:
        click.echo(f"kgcode: error: no code of {name} could be mapped", err=True)
        ctx.exit(2)
