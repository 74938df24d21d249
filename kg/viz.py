"""Draw a :class:`~kg.neighborhood.Neighborhood` as one self-contained HTML page (pyvis).

The page works with no network: pyvis writes vis-network's JavaScript and CSS into it
(``cdn_resources="in_line"``), and the Bootstrap ``<link>``/``<script>`` tags that pyvis 0.3.2's
template loads from a CDN whatever the mode are removed (the page does not use Bootstrap). A
check after rendering refuses to write a page that still names an external script or
stylesheet.

What the page shows: nodes coloured by code system (:data:`SYSTEM_COLORS`), the centre code(s)
as larger diamonds with a black border, edges coloured and labelled by relation
(:data:`RELATION_COLORS`), predicted links dashed with their score, a legend with the cut rule
and "n of N nodes shown" when the view was cut, and a tooltip per node (id, title, synonyms,
kind, system and sources; SNOMED CT ids: the identifier only and the DO/Mondo concepts that name
it) and per edge (relation, source, note text).

Example:
    >>> from kg.neighborhood import neighborhood
    >>> render_html(neighborhood(kg, ["E11.9"]), "e11.9.html")  # doctest: +SKIP
    PosixPath('e11.9.html')
"""

from __future__ import annotations

import html
import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from kg.neighborhood import Neighborhood
from ontologies.base import RELATIONS

__all__ = [
    "OTHER_COLOR",
    "RELATION_COLORS",
    "SYSTEM_COLORS",
    "external_resources",
    "find_chromium",
    "neighborhood_json",
    "render_html",
    "screenshot",
    "vis_data",
]

logger = logging.getLogger(__name__)

#: Node fill colour per code system.
SYSTEM_COLORS: dict[str, str] = {
    "ICD10CM": "#6baed6",
    "ICD9CM": "#fdae6b",
    "DOID": "#74c476",
    "MONDO": "#b4a7d6",
    "SCTID": "#fb6a4a",
}
#: Node border colour per code system (a darker shade of the fill).
_SYSTEM_BORDERS: dict[str, str] = {
    "ICD10CM": "#2171b5",
    "ICD9CM": "#d94801",
    "DOID": "#238b45",
    "MONDO": "#6a51a3",
    "SCTID": "#cb181d",
}
#: Fill colour of the other systems (MeSH, OMIM, ...).
OTHER_COLOR = "#d9d9d9"
_OTHER_BORDER = "#737373"

_SYSTEM_NAMES: dict[str, str] = {
    "ICD10CM": "ICD-10-CM",
    "ICD9CM": "ICD-9-CM",
    "DOID": "Disease Ontology (DOID)",
    "MONDO": "Mondo",
    "SCTID": "SNOMED CT id (identifier only)",
}

#: Edge colour per relation; predicted links of another name are drawn in :data:`_PREDICTED_COLOR`.
RELATION_COLORS: dict[str, str] = {
    "is_a": "#525252",
    "excludes1": "#d62728",
    "excludes2": "#e377c2",
    "code_first": "#8c564b",
    "use_additional": "#17becf",
    "code_also": "#bcbd22",
    "gem_equivalent": "#ff7f0e",
    "xref": "#2ca02c",
    "equivalent": "#9467bd",
}
_PREDICTED_COLOR = "#000000"

_RELATION_WORDS: dict[str, str] = {
    "is_a": "is a (child \u2192 parent)",
    "excludes1": "Excludes1 note",
    "excludes2": "Excludes2 note",
    "code_first": "Code first note",
    "use_additional": "Use additional note",
    "code_also": "Code also note",
    "gem_equivalent": "CMS GEM ICD-9 \u2194 10",
    "xref": "DO/Mondo cross-reference",
    "equivalent": "Mondo \u2261 DOID",
}

_N_SYNONYMS = 4
_LABEL_CHARS = 40
_EDGE_ATTRS = ("match", "file", "direction", "approximate", "combination", "scenario", "choice_list", "range")

# pyvis 0.3.2 puts these in every page, whatever ``cdn_resources`` says; vis-network is inlined.
_EXTERNAL_TAG = re.compile(
    r"<link\b[^>]*\bhref\s*=\s*[\"']?(?:https?:)?//[^>]*>"
    r"|<script\b[^>]*\bsrc\s*=\s*[\"']?(?:https?:)?//[^>]*>\s*</script\s*>",
    re.IGNORECASE,
)
_EMPTY_HEADING = re.compile(r"<center>\s*<h1>\s*</h1>\s*</center>", re.IGNORECASE)
# pyvis's template has a commented-out <link>/<script> pair naming ../node_modules files.
_LINK_COMMENT = re.compile(r"<!--(?:(?!-->).)*?\bsrc\s*=(?:(?!-->).)*-->", re.DOTALL)

_CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


# --------------------------------------------------------------------------- vis data


def _color(system: str) -> tuple[str, str]:
    return SYSTEM_COLORS.get(system, OTHER_COLOR), _SYSTEM_BORDERS.get(system, _OTHER_BORDER)


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1].rstrip() + "\u2026"


def _plain(text: str) -> str:
    # pyvis switches to a template that shows titles as HTML when one contains "href": break it.
    return text.replace("href", "hre\u200bf")


def _node_tooltip(node: dict[str, Any]) -> str:
    system = node["system"]
    lines = [node["id"] + ("  (centre)" if node["is_center"] else "")]
    if system == "SCTID":
        via = ", ".join(node.get("via") or ()) or "a DO/Mondo cross-reference"
        lines.append(f"SNOMED CT id (identifier only) via {via}")
    elif node["title"]:
        lines.append(node["title"])
    synonyms = node.get("synonyms") or []
    if synonyms:
        more = f" (+{len(synonyms) - _N_SYNONYMS} more)" if len(synonyms) > _N_SYNONYMS else ""
        lines.append("synonyms: " + "; ".join(synonyms[:_N_SYNONYMS]) + more)
    facts = [f"system: {_SYSTEM_NAMES.get(system, system)}", f"kind: {node['kind']}"]
    if node.get("billable"):
        facts.append("billable")
    lines.append(" \u00b7 ".join(facts))
    if node.get("sources"):
        lines.append("from: " + ", ".join(node["sources"]))
    hop = node.get("hop")
    lines.append(f"hops from the centre: {hop}" if hop is not None else "not reached through the graph")
    return _plain("\n".join(lines))


def _edge_tooltip(edge: dict[str, Any]) -> str:
    words = _RELATION_WORDS.get(edge["relation"], edge["relation"])
    lines = [f"{edge['src']} \u2192 {edge['dst']}", f"relation: {edge['relation']} ({words})"]
    if edge.get("predicted"):
        score = edge.get("score")
        scored = f" (score {score:.3f})" if score is not None else ""
        lines[1] = f"predicted link: {edge['relation']}{scored}"
    if edge.get("source"):
        lines.append(f"source: {edge['source']}")
    attrs = edge.get("attrs") or {}
    if attrs.get("text"):
        lines.append(f"note: {attrs['text']}")
    for key in _EDGE_ATTRS:
        if attrs.get(key) not in (None, "", [], False):
            lines.append(f"{key}: {attrs[key]}")
    if attrs.get("sources"):
        lines.append("sources: " + ", ".join(map(str, attrs["sources"])))
    return "\n".join(lines)


def _label(node: dict[str, Any]) -> str:
    """The code (ICD ids without their prefix: the colour tells the system) and a short title."""
    system, _, code = node["id"].partition(":")
    if system in ("ICD10CM", "ICD9CM") and code:
        name = f"chapter {code}" if node.get("kind") == "chapter" else code
    else:
        name = node["id"]
    title = node["title"]
    return f"{name}\n{_short(title, _LABEL_CHARS)}" if title else name


def vis_data(nb: Neighborhood) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """vis-network node and edge objects for a view (what the page draws).

    Args:
        nb: the view.

    Returns:
        ``(nodes, edges)``: dicts with vis-network's keys (``id``, ``label``, ``title``, ``color``,
        ``shape``, ... and ``from``, ``to``, ``dashes``, ...); tooltips (``title``) are plain text.
    """
    nodes: list[dict[str, Any]] = []
    for node in nb.nodes:
        fill, border = _color(node["system"])
        item: dict[str, Any] = {
            "id": node["id"],
            "label": _label(node),
            "title": _node_tooltip(node),
            "color": {
                "background": fill,
                "border": border,
                "highlight": {"background": fill, "border": "#000000"},
                "hover": {"background": fill, "border": "#000000"},
            },
            "shape": "dot",
            "size": 16 if (node.get("hop") or 0) <= 1 else 12,
            "borderWidth": 2,
            "widthConstraint": {"maximum": 150},
        }
        if node["is_center"]:
            item.update(
                shape="diamond",
                size=30,
                borderWidth=4,
                color={**item["color"], "border": "#000000"},
                font={"size": 16, "face": "sans-serif", "strokeWidth": 3, "strokeColor": "#ffffff"},
                mass=3,
            )
        nodes.append(item)
    edges: list[dict[str, Any]] = []
    for edge in nb.edges:
        rel = edge["relation"]
        colour = RELATION_COLORS.get(rel, _PREDICTED_COLOR)
        item = {
            "from": edge["src"],
            "to": edge["dst"],
            "label": rel,
            "title": _edge_tooltip(edge),
            "color": {"color": colour, "highlight": colour, "hover": colour},
            "font": {"color": colour},
            "width": 2.5 if rel == "is_a" else 1.5,
            "arrows": "to",
            "relation": rel,
        }
        if edge.get("predicted"):
            score = edge.get("score")
            item.update(
                label=f"{rel} {score:.2f}" if score is not None else rel,
                dashes=True,
                width=2.5,
                predicted=True,
            )
        edges.append(item)
    return nodes, edges


def _options() -> dict[str, Any]:
    return {
        "physics": {
            "enabled": True,
            "solver": "barnesHut",
            "barnesHut": {
                "gravitationalConstant": -6000,
                "centralGravity": 0.25,
                "springLength": 150,
                "springConstant": 0.03,
                "damping": 0.5,
                "avoidOverlap": 0.4,
            },
            "minVelocity": 1.0,
            "stabilization": {"enabled": True, "iterations": 800, "updateInterval": 50, "fit": True},
        },
        "nodes": {"font": {"size": 12, "face": "sans-serif", "multi": False}},
        "edges": {
            "smooth": {"enabled": True, "type": "dynamic"},
            "font": {"size": 9, "align": "middle", "strokeWidth": 3, "strokeColor": "#ffffff"},
            "arrows": {"to": {"enabled": True, "scaleFactor": 0.5}},
        },
        "interaction": {"hover": True, "tooltipDelay": 150, "keyboard": True, "multiselect": True},
    }


def neighborhood_json(nb: Neighborhood) -> dict[str, Any]:
    """The view as JSON for the HTTP service: the data, the legend and vis-network's objects.

    Args:
        nb: the view.

    Returns:
        A JSON-ready dict: ``centers``, ``hops``, ``relations``, ``nodes``, ``edges``, ``cut``,
        ``total_nodes_before_cut``, ``legend`` (``systems`` and ``relations``: name, colour,
        count in the view; ``cut_rule``; ``shown``) and ``vis`` (``nodes``, ``edges``,
        ``options`` ready for ``new vis.Network``).
    """
    out = nb.to_dict()
    vis_nodes, vis_edges = vis_data(nb)
    out["legend"] = _legend_data(nb)
    out["vis"] = {"nodes": vis_nodes, "edges": vis_edges, "options": _options()}
    return out


# --------------------------------------------------------------------------- legend


def _legend_data(nb: Neighborhood) -> dict[str, Any]:
    by_system: dict[str, int] = {}
    for node in nb.nodes:
        by_system[node["system"]] = by_system.get(node["system"], 0) + 1
    systems = [
        {"system": s, "name": _SYSTEM_NAMES[s], "color": SYSTEM_COLORS[s], "count": by_system.get(s, 0)}
        for s in SYSTEM_COLORS
    ]
    others = sorted(s for s in by_system if s not in SYSTEM_COLORS)
    systems.append(
        {
            "system": "other",
            "name": "other (" + (", ".join(others) if others else "MeSH, OMIM, ...") + ")",
            "color": OTHER_COLOR,
            "count": sum(by_system[s] for s in others),
        }
    )
    by_rel: dict[str, int] = {}
    predicted: dict[str, int] = {}
    for edge in nb.edges:
        counts = predicted if edge.get("predicted") else by_rel
        counts[edge["relation"]] = counts.get(edge["relation"], 0) + 1
    relations = [
        {
            "relation": r,
            "name": _RELATION_WORDS[r],
            "color": RELATION_COLORS[r],
            "count": by_rel.get(r, 0),
            "followed": r in nb.relations,
        }
        for r in RELATIONS
    ]
    shown, total = len(nb.nodes), nb.total_nodes_before_cut
    return {
        "systems": systems,
        "relations": relations,
        "predicted": [
            {"relation": r, "color": RELATION_COLORS.get(r, _PREDICTED_COLOR), "count": n}
            for r, n in sorted(predicted.items())
        ],
        "shown": f"{shown:,} of {total:,} nodes shown" if shown < total else f"all {total:,} nodes shown",
        "cut_rule": nb.cut.get("rule", ""),
        "notes": list(nb.cut.get("notes") or ()),
    }


def _legend_html(nb: Neighborhood, title: str) -> str:
    data = _legend_data(nb)
    esc = html.escape
    parts = [f'<div id="kg-legend" role="complementary"><h2>{esc(title)}</h2>']
    cut = nb.cut
    shown_cls = "kg-cut" if cut.get("applied") else "kg-all"
    parts.append(
        f'<p class="{shown_cls}" id="kg-shown"><b>{esc(data["shown"])}</b>, {len(nb.edges):,} edges'
        f" &middot; hops {nb.hops}</p>"
    )
    for note in data["notes"]:
        parts.append(f'<p class="kg-note">{esc(note)}</p>')
    parts.append("<h3>Code systems</h3><ul>")
    for s in data["systems"]:
        dim = "" if s["count"] else ' class="kg-dim"'
        parts.append(
            f'<li{dim}><span class="kg-dot" style="background:{s["color"]}"></span>'
            f'{esc(s["name"])} <span class="kg-n">{s["count"]}</span></li>'
        )
    parts.append(
        '<li><span class="kg-diamond"></span>centre code (larger, black border)</li></ul>'
        "<h3>Relations</h3><ul>"
    )
    for r in data["relations"]:
        dim = "" if r["count"] else ' class="kg-dim"'
        off = "" if r["followed"] else " (not followed)"
        parts.append(
            f'<li{dim}><span class="kg-line" style="border-top-color:{r["color"]}"></span>'
            f'<code>{esc(r["relation"])}</code> {esc(r["name"])}{off} '
            f'<span class="kg-n">{r["count"]}</span></li>'
        )
    for p in data["predicted"]:
        parts.append(
            f'<li><span class="kg-line kg-dashed" style="border-top-color:{p["color"]}"></span>'
            f'<code>{esc(p["relation"])}</code> predicted link (dashed, score in the label) '
            f'<span class="kg-n">{p["count"]}</span></li>'
        )
    parts.append("</ul>")
    parts.append(f'<h3>What is shown</h3><p id="kg-cut-rule">{esc(data["cut_rule"])}</p>')
    parts.append(
        "<p class=\"kg-hint\">SNOMED CT nodes show the identifier only (no SNOMED CT descriptions). "
        "Hover a node or an edge for details; drag to move, scroll to zoom.</p></div>"
    )
    return "".join(parts)


_CSS = """
html, body { margin: 0; padding: 0; font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
#mynetwork { width: calc(100vw - 340px) !important; height: 100vh !important; float: left;
             border: none !important; }
#kg-legend { position: fixed; top: 0; right: 0; width: 320px; height: 100vh; overflow-y: auto;
             box-sizing: border-box; padding: 10px 12px; background: #fafafa; border-left: 1px solid #ddd;
             font-size: 12px; line-height: 1.35; color: #222; }
#kg-legend h2 { font-size: 15px; margin: 0 0 6px 0; }
#kg-legend h3 { font-size: 12px; margin: 10px 0 4px 0; text-transform: uppercase; color: #555; }
#kg-legend ul { list-style: none; margin: 0; padding: 0; }
#kg-legend li { margin: 2px 0; }
#kg-legend code { font-size: 11px; }
#kg-legend .kg-dim { color: #9a9a9a; }
#kg-legend .kg-n { color: #777; float: right; }
#kg-legend .kg-cut { background: #fff3cd; border: 1px solid #e0c060; padding: 4px 6px; }
#kg-legend .kg-note { background: #fdecea; border: 1px solid #e6a6a0; padding: 4px 6px; }
#kg-legend .kg-hint { color: #666; }
.kg-dot { display: inline-block; width: 11px; height: 11px; border-radius: 50%; margin-right: 6px;
          vertical-align: middle; border: 1px solid #555; }
.kg-diamond { display: inline-block; width: 10px; height: 10px; margin: 0 7px 0 2px; transform: rotate(45deg);
              border: 2px solid #000; background: #fff; vertical-align: middle; }
.kg-line { display: inline-block; width: 26px; margin-right: 6px; border-top: 3px solid;
           vertical-align: middle; }
.kg-dashed { border-top-style: dashed; }
div.vis-tooltip { white-space: pre-wrap !important; max-width: 460px; font-family: inherit !important;
                  font-size: 12px !important; }
"""

_SCRIPT = """
(function () {
  if (typeof network === "undefined") { return; }
  window.kgcodeView = { nodes: %(n)d, edges: %(m)d, stabilized: false };
  network.once("stabilizationIterationsDone", function () {
    network.setOptions({ physics: { enabled: false } });
    network.fit({ animation: false });
    network.moveTo({ scale: network.getScale() * 0.9, animation: false });
    window.kgcodeView.stabilized = true;
    document.body.setAttribute("data-stabilized", "1");
  });
})();
"""


# --------------------------------------------------------------------------- page


def _page_title(nb: Neighborhood, title: str | None) -> str:
    if title:
        return title
    if len(nb.centers) == 1:
        return f"Neighbourhood of {nb.centers[0]}"
    return "Shared neighbourhood of " + ", ".join(c.partition(":")[2] or c for c in nb.centers)


def _strip_external(page: str) -> str:
    page, n = _EXTERNAL_TAG.subn("", page)
    if n:
        logger.debug("removed %d external <link>/<script> tag(s) from the pyvis page", n)
    page = _EMPTY_HEADING.sub("", page)
    return _LINK_COMMENT.sub("", page)


def external_resources(page: str) -> list[str]:
    """The external scripts and stylesheets a page loads (``<script src>``, ``<link href>``).

    Args:
        page: the HTML.

    Returns:
        The URLs, empty for a self-contained page.
    """
    urls = re.findall(r"<script\b[^>]*\bsrc\s*=\s*[\"']?([^\"'\s>]+)", page, re.IGNORECASE)
    urls += re.findall(r"<link\b[^>]*\bhref\s*=\s*[\"']?([^\"'\s>]+)", page, re.IGNORECASE)
    return urls


def render_html(nb: Neighborhood, path: str | Path, *, title: str | None = None) -> Path:
    """Write a view as one self-contained HTML page (opens with no network).

    Args:
        nb: the view (see :func:`kg.neighborhood.neighborhood`).
        path: the file to write; its folder is created; written atomically (temporary file,
            then rename).
        title: the page title (default "Neighbourhood of <code>").

    Returns:
        The path written.

    Raises:
        RuntimeError: the page still loads an external script or stylesheet (a pyvis template
            this module does not know).
    """
    from pyvis.network import Network

    page_title = _page_title(nb, title)
    net = Network(height="100vh", width="100%", directed=True, cdn_resources="in_line", heading="")
    vis_nodes, vis_edges = vis_data(nb)
    for node in vis_nodes:
        node = dict(node)
        net.add_node(node.pop("id"), **node)
    for edge in vis_edges:
        edge = dict(edge)
        net.add_edge(edge.pop("from"), edge.pop("to"), **edge)
    net.options = _options()
    page = _strip_external(net.generate_html())
    external = external_resources(page)
    if external:
        raise RuntimeError(f"the page would load external resources: {', '.join(external[:3])}")

    head = (
        f"<title>{html.escape(page_title)}</title>\n"
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<style>{_CSS}</style>\n</head>"
    )
    page = page.replace("</head>", head, 1)
    page = page.replace("<body>", "<body>\n" + _legend_html(nb, page_title), 1)
    script = _SCRIPT % {"n": len(nb.nodes), "m": len(nb.edges)}
    idx = page.rfind("</body>")
    page = page[:idx] + f"<script>{script}</script>\n" + page[idx:]

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(page)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.info("wrote %s (%d nodes, %d edges, %.0f KB)", path, len(nb.nodes), len(nb.edges),
                path.stat().st_size / 1024)
    return path


# --------------------------------------------------------------------------- screenshot


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable, or ``None``."""
    for name in _CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def screenshot(
    html_path: str | Path,
    png_path: str | Path,
    *,
    window_size: tuple[int, int] = (1400, 900),
    wait_ms: int = 10_000,
    timeout: float = 120.0,
) -> bool:
    """Render an HTML file (or a loopback ``http://`` URL) to a PNG with headless Chromium, offline.

    Chromium runs with no sandbox (it runs as root in CI), no GPU, no background networking and
    a throw-away profile; ``--virtual-time-budget`` lets the graph's layout settle first.

    Args:
        html_path: the page: a file, or a ``http://`` URL (e.g. the local ``kgcode serve``).
        png_path: the PNG to write.
        window_size: width and height in pixels.
        wait_ms: virtual time given to the page's scripts before the screenshot.
        timeout: seconds before Chromium is stopped.

    Returns:
        ``True`` when the PNG was written; ``False`` when there is no Chromium or it failed
        (logged).
    """
    exe = find_chromium()
    if exe is None:
        logger.info("no Chromium found: no screenshot of %s", html_path)
        return False
    if isinstance(html_path, str) and html_path.startswith(("http://", "https://")):
        target = html_path
    else:
        target = Path(html_path).resolve().as_uri()
    png_path = Path(png_path).resolve()
    png_path.parent.mkdir(parents=True, exist_ok=True)
    png_path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="kgcode-chromium-") as profile:
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={window_size[0]},{window_size[1]}",
            f"--virtual-time-budget={wait_ms}",
            f"--screenshot={png_path}",
            target,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            logger.warning("Chromium failed on %s: %s", html_path, exc)
            return False
    ok = png_path.is_file() and png_path.stat().st_size > 0
    if not ok:
        logger.warning("Chromium wrote no screenshot (exit %s): %s", proc.returncode, proc.stderr[-500:])
    return ok
