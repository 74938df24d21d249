"""The ``kgcode`` command line.

Every error a user can cause (a malformed or unknown code, a bad source file, a KG folder of
another format) is reported as one line on stderr with exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from kgcode import __version__
from kgcode import paths as kg_paths
from kgcode.cli_coder import eval_command, predict_command, train_command
from kgcode.cli_common import kg_option, load_kg_option, user_errors
from kgcode.cli_linker import linker_command
from kgcode.cli_map import map_command
from kgcode.cli_serve import serve_command
from kgcode.cli_viz import viz_command

__all__ = ["cli", "main"]

logger = logging.getLogger("kgcode")


class _Group(click.Group):
    """A click group that turns user errors into one line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except user_errors() as exc:
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if isinstance(exc, FileNotFoundError) and exc.filename:
                message = f"no such file or folder: {exc.filename}"
            click.echo(f"kgcode: error: {message}", err=True)
            ctx.exit(2)


class _State:
    """Options shared by every command."""

    def __init__(self, quiet: bool, verbose: int) -> None:
        self.quiet = quiet
        self.verbose = verbose

    @property
    def progress(self) -> bool | None:
        """``False`` with ``--quiet``; ``None`` lets each bar decide (on only on a terminal)."""
        return False if self.quiet else None


def _setup_logging(quiet: bool, verbose: int) -> None:
    level = logging.WARNING if quiet or verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)
    if verbose < 2:
        for noisy in ("owlready2", "transformers", "urllib3", "httpx"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kgcode")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars; only warnings and errors.")
@click.option("-v", "--verbose", count=True, help="Log what is done (-v), and debug details (-vv).")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, verbose: int) -> None:
    """kgcode: knowledge-graph-enhanced ICD-10-CM / ICD-9-CM coding of clinical notes."""
    _setup_logging(quiet, verbose)
    ctx.obj = _State(quiet, verbose)


# --------------------------------------------------------------------------- kg


@cli.group(cls=_Group)
def kg() -> None:
    """Build and query the knowledge graph of the code systems."""


@kg.command("build")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Open data folder with doid/ and mondo/ (default: $KGCODE_DATA_DIR or ../shared/data).",
)
@click.option(
    "--icd10cm-xml",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A CDC ICD-10-CM tabular XML (default: the April 2026 release bundled in simple-icd-10-cm).",
)
@click.option(
    "--snomed-rf2",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    default=None,
    help="Your licensed SNOMED CT RF2 Snapshot folder: adds SNOMED CT is-a and the ICD-10-CM map "
    "refset (identifiers only are kept in the KG).",
)
@click.option(
    "--umls-quadstore",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Your owlready2 / PyMedTermino2 quadstore with UMLS imported: adds SNOMED CT <-> ICD-10 "
    "links through shared UMLS CUIs.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write the KG folder (default: the user cache dir).",
)
@click.pass_obj
def kg_build(state: _State, data_dir: Path | None, icd10cm_xml: Path | None, snomed_rf2: Path | None,
             umls_quadstore: Path | None, out: Path | None) -> None:
    """Build the KG from ICD-10-CM, ICD-9-CM, the GEMs, Disease Ontology and Mondo."""
    from kg import save_kg
    from kgcode.pipeline import build_default_kg
    from ontologies import resolve_source

    if data_dir is None:
        data_dir = kg_paths.default_data_dir()
    elif not data_dir.is_dir():
        raise click.BadParameter(f"{data_dir} is not a folder", param_hint="--data-dir")
    if icd10cm_xml is not None and not icd10cm_xml.is_file():
        raise click.BadParameter(f"{icd10cm_xml} does not exist", param_hint="--icd10cm-xml")
    out = out or kg_paths.default_kg_dir()
    extra = []
    if snomed_rf2 is not None:
        extra.append(resolve_source("snomed_rf2", snapshot_dir=snomed_rf2, descriptions=False))
    if umls_quadstore is not None:
        extra.append(resolve_source("pymedtermino2", quadstore_path=umls_quadstore, titles=False))
    result = build_default_kg(data_dir, icd10cm_xml=icd10cm_xml, extra_sources=extra,
                              progress=state.progress)
    save_kg(result.kg, out)
    kg_paths.remember_kg(out)
    stats = result.kg.stats()
    click.echo(
        f"built KG in {result.seconds:.1f} s: {stats['nodes']:,} nodes, {stats['edges']:,} edges, "
        f"{stats['icd10cm_with_snomed']:,} ICD-10-CM codes with a SNOMED CT id -> {out}"
    )
    for line in result.left_out:
        click.echo(f"note: {line}")


def _stats_table(stats: dict[str, Any]) -> str:
    lines = [f"nodes: {stats['nodes']:,}   edges: {stats['edges']:,}", "", "nodes by system:"]
    lines += [f"  {k:<10} {v:>9,}" for k, v in sorted(stats["nodes_by_system"].items())]
    lines += ["", "edges by relation:"]
    lines += [f"  {k:<16} {v:>9,}" for k, v in sorted(stats["edges_by_relation"].items())]
    lines += [
        "",
        f"ICD-10-CM billable codes:        {stats.get('icd10cm_billable', 0):>9,}",
        f"ICD-10-CM codes with SNOMED CT:  {stats['icd10cm_with_snomed']:>9,}",
    ]
    return "\n".join(lines)


@kg.command("stats")
@kg_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def kg_stats(kg_dir: Path | None, as_json: bool) -> None:
    """Counts per code system and relation type."""
    graph = load_kg_option(kg_dir)
    stats = graph.stats()
    click.echo(json.dumps(stats, indent=2, sort_keys=True) if as_json else _stats_table(stats))


def _fmt_items(items: list[dict[str, Any]], limit: int = 12) -> list[str]:
    out = []
    for item in items[:limit]:
        extra = []
        if item.get("from") and item.get("from") != item.get("self"):
            extra.append(f"from {item['from']}")
        for flag in ("approximate", "combination"):
            if item.get(flag):
                extra.append(flag)
        if item.get("direction"):
            extra.append(item["direction"].replace("_", " "))
        if item.get("match"):
            extra.append(item["match"])
        tail = f"  [{', '.join(extra)}]" if extra else ""
        out.append(f"    {item['id']:<18} {item.get('title', '')}{tail}")
    if len(items) > limit:
        out.append(f"    ... and {len(items) - limit} more (use --json for all)")
    return out


def _show_text(record: dict[str, Any]) -> str:
    lines = [f"{record['id']}  {record['title']}"]
    lines.append(f"  kind: {record['kind']}   billable: {'yes' if record['billable'] else 'no'}")
    if record["synonyms"]:
        lines.append("  synonyms:")
        lines += [f"    {s}" for s in record["synonyms"]]
    for key in ("parents", "children", "excludes1", "excludes2", "code_first", "use_additional",
                "code_also", "gem", "xrefs"):
        items = record.get(key) or []
        if items:
            for item in items:
                item["self"] = record["id"]
            lines.append(f"  {key.replace('_', ' ')} ({len(items)}):")
            lines += _fmt_items(items)
    if record.get("gem_no_map"):
        lines.append("  gem: no map (the CMS GEM says this code has no equivalent)")
    if record.get("snomed"):
        lines.append(f"  SNOMED CT ids ({len(record['snomed'])}, identifiers only):")
        for link in record["snomed"]:
            lines.append(
                f"    {link['sctid']:<18} via {link['via']} ({link['via_label']}; "
                f"ICD {link['icd_match']}, SNOMED {link['snomed_match']})"
            )
    return "\n".join(lines)


@kg.command("show")
@click.argument("code")
@click.option("--system", default=None, help="System of a bare code (default ICD10CM; e.g. ICD9CM).")
@kg_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def kg_show(code: str, system: str | None, kg_dir: Path | None, as_json: bool) -> None:
    """Title, synonyms, hierarchy, excludes, GEM and SNOMED CT links of CODE."""
    from kg.describe import describe

    graph = load_kg_option(kg_dir)
    record = describe(graph, code, system=system)
    click.echo(json.dumps(record, indent=2) if as_json else _show_text(record))


@kg.command("search")
@click.argument("text", nargs=-1, required=True)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@click.option("--system", default=None, help="Only this system (ICD10CM, ICD9CM, DOID, MONDO).")
@kg_option
@click.option("--json", "as_json", is_flag=True, help="A JSON list.")
def kg_search(text: tuple[str, ...], limit: int, system: str | None, kg_dir: Path | None,
              as_json: bool) -> None:
    """Find codes by title or synonym (case-insensitive)."""
    from ontologies.codes import canonical_system

    graph = load_kg_option(kg_dir)
    hits = graph.search(" ".join(text), limit=limit,
                        system=canonical_system(system) if system else None)
    if as_json:
        click.echo(json.dumps([{"id": i, "match": m, "score": round(s, 4)} for i, m, s in hits], indent=2))
        return
    if not hits:
        click.echo("no match", err=True)
        return
    for node_id, matched, _score in hits:
        title = graph.graph.nodes[node_id].get("title", "")
        via = f"  (synonym: {matched})" if matched and matched != title else ""
        click.echo(f"{node_id:<20} {title}{via}")


@kg.command("export-owl")
@kg_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The OWL file to write (RDF/XML).")
@click.option("--systems", default=None,
              help="Comma-separated systems to export (default: all), e.g. ICD10CM,DOID.")
@click.pass_obj
def kg_export_owl(state: _State, kg_dir: Path | None, out: Path, systems: str | None) -> None:
    """Export the KG as an OWL ontology (codes as classes, is_a as subClassOf)."""
    from kg.owl_export import export_owl
    from ontologies.codes import canonical_system

    graph = load_kg_option(kg_dir)
    chosen = {canonical_system(s) for s in systems.split(",")} if systems else None
    counts = export_owl(graph.iter_concepts(), graph.iter_relations(), out, systems=chosen)
    annotations = sum(counts.get("annotations", {}).values())
    click.echo(
        f"wrote {out}: {counts['classes']:,} classes, {counts['subclass_of']:,} subClassOf, "
        f"{annotations:,} relation annotations in {counts['seconds']:.1f} s"
    )


# Commands that live in their own modules (one job each).
cli.add_command(train_command)
cli.add_command(predict_command)
cli.add_command(eval_command)
cli.add_command(map_command)
cli.add_command(linker_command)
cli.add_command(viz_command)
cli.add_command(serve_command)


def main(argv: list[str] | None = None) -> None:
    """Console entry point."""
    cli.main(args=argv, prog_name="kgcode")


if __name__ == "__main__":  # pragma: no cover
    main()
