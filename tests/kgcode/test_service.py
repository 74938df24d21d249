"""The HTTP service, as a client uses it: every endpoint and every bad input, with a fake coder."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from kgcode.cli import cli  # noqa: E402
from kgcode.service import create_app, highlights  # noqa: E402

NOTE = ("Patient seen for follow-up. History of type 2 diabetes without complications. "
        "Hypoglycemia episode last week. Plan: continue metformin.")


class FakeCoder:
    """Same interface as ``kgcode.coder.Coder.predict``: keyword rules, evidence = the sentence."""

    RULES = (("diabetes", "ICD10CM:E11.9", "Type 2 diabetes mellitus without complications", 0.91),
             ("hypoglycemia", "ICD10CM:E16.2", "Hypoglycemia, unspecified", 0.62),
             ("metformin", "ICD10CM:Z79.84", "Long term (current) use of oral hypoglycemic drugs", 0.4))
    labels = [r[1] for r in RULES]

    def __init__(self, delay: float = 0.0, fail: bool = False) -> None:
        self.delay = delay
        self.fail = fail
        self.calls = 0
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def predict(self, texts: Sequence[str], *, top_k: int | None = None,
                threshold: float | None = None) -> list[list[dict[str, Any]]]:
        with self._lock:
            self.calls += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.delay:
                time.sleep(self.delay)
            if self.fail:
                raise RuntimeError("boom: secret internals")
            out = []
            for text in texts:
                codes = []
                for word, code, title, score in self.RULES:
                    if threshold is not None and score < threshold:
                        continue
                    ev = [{"sentence": m.group(0).strip(), "start": m.start(), "end": m.end(), "weight": 1.0}
                          for m in re.finditer(r"[^.]*" + word + r"[^.]*\.?", text, re.IGNORECASE)]
                    if ev:
                        codes.append({"code": code, "title": title, "score": score, "evidence": ev})
                out.append(codes[: top_k or None])
            return out
        finally:
            with self._lock:
                self.active -= 1


@pytest.fixture(scope="session")
def fixture_kg_dir(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Path:
    """A KG built by the CLI from the fixtures (mini ICD-10-CM XML, tiny DO and Mondo, GEMs)."""
    out = tmp_path_factory.mktemp("kg-serve") / "kg"
    result = CliRunner().invoke(
        cli,
        ["-q", "kg", "build", "--icd10cm-xml", str(fixtures_dir / "icd10cm_mini.xml"),
         "--data-dir", str(fixtures_dir), "--out", str(out)],
        env={"KGCODE_HOME": str(out.parent / "home")},
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="session")
def fixture_kg(fixture_kg_dir: Path) -> Any:
    from kg import load_kg

    return load_kg(fixture_kg_dir)


@pytest.fixture(scope="module")
def client(fixture_kg: Any) -> TestClient:
    app = create_app(fixture_kg, FakeCoder(), kg_path="fixture", max_batch=4, max_note_chars=2000,
                     max_body_bytes=50_000)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture(scope="module")
def no_model(fixture_kg: Any) -> TestClient:
    app = create_app(fixture_kg, None, model_error="no --model given")
    return TestClient(app, raise_server_exceptions=False)


def _one_line_error(r: Any, status: int) -> str:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail
    return detail


# ----------------------------------------------------------------------------- highlights


def test_highlights_merge_overlaps_in_rank_order() -> None:
    codes = [{"code": "A", "evidence": [{"start": 0, "end": 10}, {"start": 30, "end": 40}]},
             {"code": "B", "evidence": [{"start": 5, "end": 15}, {"start": 35, "end": 99}]}]
    assert highlights(50, codes) == [
        {"start": 0, "end": 5, "codes": ["A"]},
        {"start": 5, "end": 10, "codes": ["A", "B"]},
        {"start": 10, "end": 15, "codes": ["B"]},
        {"start": 30, "end": 35, "codes": ["A"]},
        {"start": 35, "end": 40, "codes": ["A", "B"]},
        {"start": 40, "end": 50, "codes": ["B"]},  # clipped to the note
    ]


def test_highlights_join_adjacent_runs_and_drop_empty() -> None:
    codes = [{"code": "A", "evidence": [{"start": 0, "end": 5}, {"start": 5, "end": 8},
                                        {"start": 9, "end": 9}, {"start": "x", "end": 3}]}]
    assert highlights(20, codes) == [{"start": 0, "end": 8, "codes": ["A"]}]
    assert highlights(20, []) == []


# ----------------------------------------------------------------------------- predict


def test_predict_one_note(client: TestClient) -> None:
    r = client.post("/predict", json={"text": NOTE})
    assert r.status_code == 200, r.text
    body = r.json()
    codes = [c["code"] for c in body["codes"]]
    assert codes == ["ICD10CM:E11.9", "ICD10CM:E16.2", "ICD10CM:Z79.84"]
    assert body["text_length"] == len(NOTE)
    for c in body["codes"]:
        assert set(c) == {"code", "title", "score", "evidence"}
        for ev in c["evidence"]:
            assert NOTE[ev["start"]:ev["end"]].strip() == ev["sentence"]
    marked = [NOTE[h["start"]:h["end"]] for h in body["highlights"]]
    assert any("type 2 diabetes" in m for m in marked)
    assert body["highlights"][0]["codes"] == ["ICD10CM:E11.9"]


def test_predict_batch_with_ids_and_options(client: TestClient) -> None:
    r = client.post("/predict", json={"notes": [{"id": "a", "text": NOTE}, {"text": "Hypoglycemia again."}],
                                      "top_k": 1, "threshold": 0.5})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["id"] for x in results] == ["a", 1]
    assert [c["code"] for c in results[0]["codes"]] == ["ICD10CM:E11.9"]
    assert [c["code"] for c in results[1]["codes"]] == ["ICD10CM:E16.2"]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b'{"text": "diabetes"', 422, "malformed JSON"),
        (b"not json at all", 422, "malformed JSON"),
        (b"[]", 422, "invalid request"),
        (b"{}", 422, "either 'text'"),
        (b'{"text": "a", "notes": []}', 422, "either 'text'"),
        (b'{"notes": []}', 422, "empty"),
        (b'{"text": 5}', 422, "text"),
        (b'{"text": "   "}', 422, "no text to code"),
        (b'{"notes": [{"id": 1}]}', 422, "notes.0.text"),
        (b'{"text": "diabetes", "top_k": 0}', 422, "top_k"),
        (b'{"text": "diabetes", "threshold": 2}', 422, "threshold"),
    ],
)
def test_predict_bad_input(client: TestClient, body: bytes, status: int, words: str) -> None:
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert words in _one_line_error(r, status)


def test_predict_over_long_note_and_batch(client: TestClient) -> None:
    detail = _one_line_error(client.post("/predict", json={"text": "diabetes " * 400}), 422)
    assert "too long" in detail and "2,000" in detail
    two = {"notes": [{"text": "ok"}, {"text": "x" * 2001}]}
    detail = _one_line_error(client.post("/predict", json=two), 422)
    assert detail.startswith("note 1 is too long")
    detail = _one_line_error(client.post("/predict", json={"notes": [{"text": "diabetes"}] * 5}), 422)
    assert "too many notes: 5" in detail and "4" in detail


def test_body_size_cap(client: TestClient) -> None:
    big = json.dumps({"text": "diabetes " * 10_000}).encode()
    r = client.post("/predict", content=big, headers={"content-type": "application/json"})
    detail = _one_line_error(r, 413)
    assert "too large" in detail

    def chunks():  # no Content-Length: the cap applies as the body streams in
        for _ in range(20):
            yield b"x" * 5_000

    r = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert "too large" in _one_line_error(r, 413)


def test_predict_without_model(no_model: TestClient) -> None:
    r = no_model.post("/predict", json={"text": NOTE})
    assert r.status_code == 503
    assert r.json()["detail"].startswith("no model loaded")
    assert r.json()["model_loaded"] is False
    h = no_model.get("/health").json()
    assert h["model"]["loaded"] is False and "no --model" in h["model"]["error"]


def test_predict_model_error_is_500_without_traceback(fixture_kg: Any) -> None:
    c = TestClient(create_app(fixture_kg, FakeCoder(fail=True)), raise_server_exceptions=False)
    detail = _one_line_error(c.post("/predict", json={"text": NOTE}), 500)
    assert "boom" not in detail and "internal error" in detail


def test_predict_timeout_is_504(fixture_kg: Any) -> None:
    c = TestClient(create_app(fixture_kg, FakeCoder(delay=1.0), timeout_s=0.2), raise_server_exceptions=False)
    assert "longer than 0.2 s" in _one_line_error(c.post("/predict", json={"text": NOTE}), 504)


def test_concurrent_predictions_are_serialised(fixture_kg: Any) -> None:
    coder = FakeCoder(delay=0.05)
    c = TestClient(create_app(fixture_kg, coder), raise_server_exceptions=False)
    assert coder.calls == 1  # the warm-up at start, so no request pays for the first forward pass
    statuses: list[int] = []

    def call() -> None:
        statuses.append(c.post("/predict", json={"text": NOTE}).status_code)

    threads = [threading.Thread(target=call) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [200] * 6
    assert coder.calls == 1 + 6 and coder.max_active == 1


# ----------------------------------------------------------------------------- codes


def test_code_record(client: TestClient) -> None:
    r = client.get("/codes/e119")
    assert r.status_code == 200
    rec = r.json()
    assert rec["id"] == "ICD10CM:E11.9" and rec["title"]
    assert {"parents", "children", "ancestors", "excludes1", "snomed"} <= set(rec)
    assert client.get("/codes/ICD10CM:E11.9").json() == rec


def test_unknown_code_is_404_with_suggestions(client: TestClient) -> None:
    for url in ("/codes/E11.99", "/codes/E11.99/neighborhood", "/codes/E11.99/neighborhood.html",
                "/map/E11.99"):
        r = client.get(url)
        detail = _one_line_error(r, 404)
        assert "unknown code 'ICD10CM:E11.99'" in detail
        assert "ICD10CM:E11.9" in r.json()["suggestions"]


def test_malformed_code_is_422(client: TestClient) -> None:
    for url in ("/codes/E1!", "/codes/E1!/neighborhood", "/map/E1!", "/codes/ICD9CM:ABC"):
        assert "malformed" in _one_line_error(client.get(url), 422)


def test_neighborhood_json(client: TestClient) -> None:
    r = client.get("/codes/E11.9/neighborhood", params={"hops": 1, "max_nodes": 5})
    assert r.status_code == 200
    view = r.json()
    assert view["centers"] == ["ICD10CM:E11.9"]
    assert 1 <= len(view["nodes"]) <= 5 and len(view["vis"]["nodes"]) == len(view["nodes"])
    assert {"legend", "cut", "edges"} <= set(view)
    only = client.get("/codes/E11.9/neighborhood", params={"relations": "is_a"}).json()
    assert only["relations"] == ["is_a"] and all(e["relation"] == "is_a" for e in only["edges"])


@pytest.mark.parametrize(
    ("params", "words"),
    [({"hops": 9}, "hops"), ({"hops": "x"}, "hops"), ({"max_nodes": 0}, "max_nodes"),
     ({"relations": "is_a,nope"}, "unknown relation(s): nope"), ({"relations": ""}, "no relation"),
     ({"format": "png"}, "format")],
)
def test_neighborhood_bad_params(client: TestClient, params: dict[str, Any], words: str) -> None:
    assert words in _one_line_error(client.get("/codes/E11.9/neighborhood", params=params), 422)


def test_neighborhood_html_is_self_contained(client: TestClient) -> None:
    from kg.viz import external_resources

    for r in (client.get("/codes/E11.9/neighborhood.html", params={"hops": 1}),
              client.get("/codes/E11.9/neighborhood", params={"format": "html"})):
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "vis.Network" in r.text or "new vis" in r.text
        assert external_resources(r.text) == []


# ----------------------------------------------------------------------------- map


def test_map_to_snomed_and_icd9(client: TestClient) -> None:
    r = client.get("/map/E11.9")
    assert r.status_code == 200
    m = r.json()
    assert m["code"] == "ICD10CM:E11.9" and m["to"] == "SCTID"
    assert all(t["target"].startswith("SCTID:") and t["explanation"] for t in m["targets"])
    assert m["targets"] or m["note"]
    r = client.get("/map/E11.9", params={"to": "ICD9CM"})
    assert r.status_code == 200 and r.json()["to"] == "ICD9CM"


def test_map_bad_target(client: TestClient) -> None:
    assert "cannot map to 'XX'" in _one_line_error(client.get("/map/E11.9", params={"to": "XX"}), 422)
    assert "already ICD-10-CM" in _one_line_error(client.get("/map/E11.9", params={"to": "ICD10CM"}), 422)
    assert "top_k" in _one_line_error(client.get("/map/E11.9", params={"top_k": 0}), 422)


# ----------------------------------------------------------------------------- health, page, docs


def test_health(client: TestClient) -> None:
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["kg"]["nodes"] > 0 and h["kg"]["path"] == "fixture"
    assert h["model"]["loaded"] is True and h["model"]["labels"] == 3
    assert h["limits"]["max_batch"] == 4 and h["versions"]["kgcode"]


def test_page_and_assets_have_no_external_resources(client: TestClient) -> None:
    from kg.viz import external_resources

    page = client.get("/")
    assert page.status_code == 200 and "Code a note" in page.text
    urls = external_resources(page.text)
    assert urls and all(u.startswith("/static/") for u in urls)
    for url in urls:
        r = client.get(url)
        assert r.status_code == 200 and len(r.content) > 100, url
    assert "vis-network" in client.get("/static/vis-network.min.js").text[:300]
    for name in ("app.js", "app.css", "index.html"):
        assert not re.search(r"https?://(?!visjs)", client.get(f"/static/{name}").text), name


def test_docs_offline_and_openapi(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    wanted = {"/predict", "/codes/{code}", "/codes/{code}/neighborhood", "/map/{code}", "/health"}
    assert wanted <= set(spec["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower() and "/openapi.json" in docs.text
    assert client.get("/redoc").status_code == 404


def test_unknown_routes_and_static(client: TestClient) -> None:
    assert _one_line_error(client.get("/nothing"), 404)
    assert _one_line_error(client.get("/static/nope.js"), 404)
    assert client.get("/static/..%2Fservice.py").status_code == 404
    assert _one_line_error(client.put("/predict", json={}), 405)


def test_load_coder_failure_means_no_model(tmp_path: Path) -> None:
    from kgcode.service import load_coder

    coder, error = load_coder(tmp_path / "missing")
    assert coder is None and error and "\n" not in error


def test_serve_command_help() -> None:
    from kgcode.cli_serve import serve_command

    result = CliRunner().invoke(serve_command, ["--help"])
    assert result.exit_code == 0 and "--model" in result.output and "--port" in result.output
    assert "--dtype" in result.output and "--backend" in result.output


def test_serve_refuses_an_inference_option_the_model_cannot_run(tmp_path: Path) -> None:
    """A bad --dtype/--backend stops ``kgcode serve`` with one line before it listens."""
    from kgcode.cli_serve import serve_command
    from tests.fixtures.coder.helpers import build_mini_kg, train_tiny

    kg = build_mini_kg()
    folder = train_tiny(kg, tmp_path / "emb").save_to_directory(tmp_path / "coder")
    kg_dir = kg.save(tmp_path / "kg")
    result = CliRunner().invoke(
        serve_command, ["--model", str(folder), "--kg", str(kg_dir), "--backend", "onnx"]
    )
    assert result.exit_code == 2
    assert "--backend onnx" in result.output and "no ONNX Runtime version" in result.output
    assert "Traceback" not in result.output


def test_serve_applies_the_unseen_offset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--unseen-offset`` reaches the coder the app serves; a non-number stops with one line."""
    import uvicorn

    import kgcode.service
    from kgcode.cli_serve import serve_command
    from tests.fixtures.coder.helpers import build_mini_kg, train_tiny

    kg = build_mini_kg()
    folder = train_tiny(kg, tmp_path / "emb").save_to_directory(tmp_path / "coder")
    kg_dir = kg.save(tmp_path / "kg")
    served: dict[str, object] = {}
    real = kgcode.service.create_app

    def spy(graph, coder, **kw):  # noqa: ANN001, ANN003, ANN202
        served["coder"] = coder
        return real(graph, coder, **kw)

    monkeypatch.setattr(kgcode.service, "create_app", spy)
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    args = ["--model", str(folder), "--kg", str(kg_dir)]
    result = CliRunner().invoke(serve_command, [*args, "--unseen-offset", "3"])
    assert result.exit_code == 0, result.output
    assert served["coder"].unseen_offset == 3.0  # type: ignore[attr-defined]
    bad = CliRunner().invoke(serve_command, [*args, "--unseen-offset", "nan"])
    assert bad.exit_code == 2 and "--unseen-offset" in bad.output and "Traceback" not in bad.output


def test_predict_with_a_real_trained_coder_loaded_from_its_folder(tmp_path: Path) -> None:
    """``kgcode serve --model DIR``'s path: a coder trained on the fixture notes, saved, loaded once."""
    from kgcode.service import load_coder
    from tests.fixtures.coder.helpers import build_mini_kg, train_tiny

    kg = build_mini_kg()
    folder = train_tiny(kg, tmp_path / "emb").save_to_directory(tmp_path / "coder")
    coder, error = load_coder(folder)
    assert coder is not None, error
    client = TestClient(create_app(kg, coder, kg_path="mini"), raise_server_exceptions=False)
    health = client.get("/health").json()["model"]
    assert health["loaded"] is True
    assert health["inference"]["backend"] == "torch" and health["inference"]["dtype"] in ("fp32", "bf16")
    note = "A woman with type 2 diabetes mellitus and hypoglycemia with coma.\nShe takes oral hypoglycemics."
    notes = [{"id": "a", "text": note}, {"id": "b", "text": note.upper()}]
    r = client.post("/predict", json={"notes": notes})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [n["id"] for n in body["results"]] == ["a", "b"]
    codes = body["results"][0]["codes"]
    assert codes and all(c["code"].startswith("ICD10CM:") and 0.0 <= c["score"] <= 1.0 for c in codes)
    assert [c["score"] for c in codes] == sorted((c["score"] for c in codes), reverse=True)
    for c in codes:
        for ev in c["evidence"]:
            assert note[ev["start"]:ev["end"]] == ev["sentence"]
    missing, error = load_coder(tmp_path / "nope")
    assert missing is None and error
