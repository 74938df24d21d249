"""The page in a real browser: headless Chromium against the service on loopback, with a fake coder.

Chromium loads ``/?note=...`` (the page fills the note in and submits it, then opens the top
code), runs its scripts under ``--virtual-time-budget`` and dumps the DOM; the test asserts on
the codes listed, the ``<mark>``-ed evidence and the node count the page exposes once
vis-network has drawn the neighbourhood. Screenshots of the page and of a neighbourhood view go
to the test's tmp dir and, when ``KGCODE_SCREENSHOT_DIR`` is set, there too.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from kg.viz import find_chromium  # noqa: E402
from kgcode.service import create_app  # noqa: E402
from tests.kgcode.test_service import NOTE, FakeCoder  # noqa: E402
from tests.kgcode.test_service import fixture_kg as fixture_kg  # noqa: E402, F401
from tests.kgcode.test_service import fixture_kg_dir as fixture_kg_dir  # noqa: E402, F401

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="Chromium is not installed (apt-get install chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(fixture_kg: Any) -> Iterator[str]:
    """The service with the fake coder, served by uvicorn in a thread on a free loopback port."""
    app = create_app(fixture_kg, FakeCoder(), kg_path="fixture")
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        access_log=False))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(base + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    yield base
    srv.should_exit = True
    thread.join(timeout=10)


def _chromium(url: str, *extra: str, budget_ms: int = 15_000, timeout: float = 90.0) -> str:
    with tempfile.TemporaryDirectory(prefix="kgcode-chromium-") as profile:
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--window-size=1400,1000",
               f"--virtual-time-budget={budget_ms}", *extra, url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def _save(png: Path) -> None:
    assert png.is_file() and png.stat().st_size > 5_000, f"no screenshot at {png}"
    out = os.environ.get("KGCODE_SCREENSHOT_DIR")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(png, Path(out) / png.name)


def test_page_codes_a_note_highlights_evidence_and_draws_the_graph(server: str, tmp_path: Path) -> None:
    url = f"{server}/?hops=1&note={urllib.parse.quote(NOTE)}"
    dom = _chromium(url, "--dump-dom")
    # the codes, in rank order
    listed = re.findall(r'<li data-code="([^"]+)"', dom)
    assert listed == ["ICD10CM:E11.9", "ICD10CM:E16.2", "ICD10CM:Z79.84"], dom[:3000]
    # the evidence, highlighted in the note
    marks = {html.unescape(m.group(2)): m.group(1)
             for m in re.finditer(r'<mark data-codes="([^"]*)"[^>]*>(.*?)</mark>', dom, re.S)}
    assert any("type 2 diabetes" in text and "ICD10CM:E11.9" in codes for text, codes in marks.items()), marks
    assert any("Hypoglycemia" in text for text in marks), marks
    # the top code was opened: its record, its mappings and its drawn neighbourhood
    assert 'id="code-title"' in dom and "Type 2 diabetes mellitus" in dom
    nodes = re.search(r'<div id="graph"[^>]*data-nodes="(\d+)"', dom)
    assert nodes and int(nodes.group(1)) > 1, dom[-3000:]
    assert re.search(r'<div id="graph"[^>]*data-stabilized="1"', dom), "vis-network did not finish its layout"
    assert "<canvas" in dom
    assert 'data-model="loaded"' in dom

    png = tmp_path / "serve_page.png"
    _chromium(url, f"--screenshot={png}")
    _save(png)


def test_page_without_model_still_looks_codes_up(fixture_kg: Any, tmp_path: Path) -> None:
    app = create_app(fixture_kg, None, model_error="no --model given")
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if srv.started:
                break
            time.sleep(0.05)
        dom = _chromium(f"http://127.0.0.1:{port}/?hops=1&code=E11.9&note=diabetes", "--dump-dom")
        assert 'data-model="none"' in dom and "no model loaded" in dom
        assert re.search(r'<button id="predict-btn"[^>]*disabled', dom)
        assert "<mark" not in dom
        nodes = re.search(r'<div id="graph"[^>]*data-nodes="(\d+)"', dom)
        assert nodes and int(nodes.group(1)) > 1
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def test_neighbourhood_page_screenshot(server: str, tmp_path: Path) -> None:
    png = tmp_path / "serve_neighbourhood.png"
    _chromium(f"{server}/codes/E11.9/neighborhood.html?hops=2", f"--screenshot={png}")
    _save(png)


@pytest.fixture(scope="module")
def real_coder_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service with a real :class:`~kgcode.coder.Coder` trained on the fixture notes (hashing
    encoder, mini KG), saved and loaded as ``kgcode serve --model`` does."""
    from kgcode.service import load_coder
    from tests.fixtures.coder.helpers import build_mini_kg, train_tiny

    kg = build_mini_kg()
    result = train_tiny(kg, tmp_path_factory.mktemp("emb"))
    folder = result.save_to_directory(tmp_path_factory.mktemp("model") / "coder")
    loaded, error = load_coder(folder)
    assert loaded is not None, error
    app = create_app(kg, loaded, kg_path="mini")
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                        access_log=False))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(400):
        if srv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def test_page_with_a_real_coder_lists_codes_and_evidence(real_coder_server: str, tmp_path: Path) -> None:
    note = "A man with type 2 diabetes mellitus and hypoglycemia with coma.\nHe takes oral hypoglycemics."
    url = f"{real_coder_server}/?hops=1&note={urllib.parse.quote(note)}"
    dom = _chromium(url, "--dump-dom")
    listed = re.findall(r'<li data-code="([^"]+)"', dom)
    assert listed and all(code.startswith("ICD10CM:") for code in listed), dom[:3000]
    marks = [html.unescape(m.group(1)) for m in re.finditer(r"<mark[^>]*>(.*?)</mark>", dom, re.S)]
    assert marks and all(m.strip() in note for m in marks), marks
    assert 'data-model="loaded"' in dom
    nodes = re.search(r'<div id="graph"[^>]*data-nodes="(\d+)"', dom)
    assert nodes and int(nodes.group(1)) >= 1, dom[-3000:]
    png = tmp_path / "serve_page_real_coder.png"
    _chromium(url, f"--screenshot={png}")
    _save(png)
