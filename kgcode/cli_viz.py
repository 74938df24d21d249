"""``kgcode viz``: draw the neighbourhood of one or more codes as a self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

import click

from kgcode.cli_common import kg_option, load_kg_option

__all__ = ["viz_command"]


def _relations(value: str | None) -> list[str] | None:
    """Parse ``--relations`` (comma-separated); unknown names are a usage error (exit 2)."""
    from ontologies.base import RELATIONS

    if value is None:
        return None
    names = [r.strip() for r in value.split(",") if r.strip()]
    unknown = [r for r in names if r not in RELATIONS]
    if unknown or not names:
        what = f"unknown relation(s): {', '.join(unknown)}" if unknown else "no relation given"
        raise click.BadParameter(f"{what}; valid: {', '.join(RELATIONS)}", param_hint="--relations")
    return names


@click.command("viz")
@click.argument("codes", nargs=-1, required=True)
@click.option("--hops", default=2, show_default=True, type=click.IntRange(0, 6),
              help="One code: show nodes up to this many edges away (either direction).")
@click.option("--relations", default=None, metavar="REL,REL,...",
              help="Relations to follow and draw (default: all): is_a, excludes1, excludes2, code_first, "
                   "use_additional, code_also, gem_equivalent, xref, equivalent.")
@click.option("--max-nodes", default=150, show_default=True, type=click.IntRange(1, 2000),
              help="The most nodes drawn; a larger view is cut by the rule the page states.")
@click.option("--max-path", default=None, type=click.IntRange(0, 10),
              help="Several codes: the longest path joining two of them (default: 2 x --hops).")
@click.option("--outer-edges", is_flag=True,
              help="One code: also draw the edges between two nodes of the outermost ring.")
@click.option("--system", default=None, help="System of bare codes (default ICD10CM; e.g. ICD9CM).")
@click.option("--title", default=None, help="Page title (default: 'Neighbourhood of CODE').")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The HTML file to write (one self-contained page; opens with no network).")
@kg_option
def viz_command(
    codes: tuple[str, ...],
    hops: int,
    relations: str | None,
    max_nodes: int,
    max_path: int | None,
    outer_edges: bool,
    system: str | None,
    title: str | None,
    out: Path,
    kg_dir: Path | None,
) -> None:
    """Draw the neighbourhood of CODE, or the shared neighbourhood of several codes, as HTML.

    Examples: ``kgcode viz E11.9 --out e11.9.html``;
    ``kgcode viz E11.9 I10 N18.3 --out shared.html``.
    """
    from kg.neighborhood import neighborhood
    from kg.viz import render_html

    chosen = _relations(relations)
    graph = load_kg_option(kg_dir)
    nb = neighborhood(
        graph,
        list(codes),
        hops=hops,
        relations=chosen,
        max_nodes=max_nodes,
        max_path=max_path,
        outer_edges=outer_edges,
        system=system,
    )
    path = render_html(nb, out, title=title)
    cut = nb.cut
    how = cut["summary"] if cut.get("applied") else "none"
    click.echo(f"wrote {path} ({path.stat().st_size / 1024:,.0f} KB)")
    click.echo(f"{len(nb.nodes):,} nodes, {len(nb.edges):,} edges (cut: {how})")
    for note in cut.get("notes") or ():
        click.echo(f"note: {note}")
