"""The HTTP service behind ``kgcode serve``: predict codes, look codes up, map them, draw them.

Endpoints (all JSON unless said otherwise; errors are ``{"detail": "<one line>", ...}``):

* ``POST /predict``: one note ``{"text": ...}`` or a batch ``{"notes": [{"id", "text"}, ...]}``
  (optional ``top_k``, ``threshold``): per note the ranked codes (code, title, score, evidence
  sentences with character offsets) and ``highlights``, the note's evidence spans merged into
  non-overlapping ``{start, end, codes}`` runs (what the page wraps in ``<mark>``). 503 when no
  model is loaded.
* ``GET /codes/{code}``: the ``kgcode kg show`` record (:func:`kg.describe.describe`).
* ``GET /codes/{code}/neighborhood``: the view as JSON (:func:`kg.viz.neighborhood_json`);
  ``?format=html`` or ``GET /codes/{code}/neighborhood.html``: the self-contained page.
  Query: ``hops``, ``relations`` (comma-separated), ``max_nodes``.
* ``GET /map/{code}?to=SNOMEDCT``: the targets of :meth:`kgcode.mapping.Mapper.map`.
* ``GET /health``: status, KG counts, whether a model is loaded, versions.
* ``GET /openapi.json``: the OpenAPI schema. FastAPI's ``/docs`` and ``/redoc`` pages load
  Swagger UI / ReDoc from a CDN, so they are switched off: the service never makes a browser
  fetch anything from outside. ``GET /docs`` is a small self-contained page listing the
  endpoints from ``/openapi.json``.
* ``GET /``: the single page (``kgcode/static/``); ``GET /static/vis-network.min.js`` and
  ``.css``: vis-network, shipped inside the ``pyvis`` package, served from here.

Limits (all keyword arguments of :func:`create_app`): a request body over ``max_body_bytes`` is
refused with 413 before it is read whole; a batch over ``max_batch`` notes and a note over
``max_note_chars`` characters get 422; every request's work runs in a worker thread under
``timeout_s`` (504 past it). Malformed JSON, a malformed code (``InvalidCodeError``: 422) and an
unknown code (``UnknownCodeError``: 404, with ``suggestions``) get one line; any other error is
logged with its traceback and answered 500 ``internal error`` without it.

Concurrency: the KG is read-only once loaded; its lazy indexes (code suggestions, SNOMED CT links)
are built at start-up so that no request builds them. The :class:`~kgcode.mapping.Mapper` caches
as it goes and is shared behind a lock. Model inference runs under one lock: on a 2-core machine
torch's intra-op threads already use every core for one batch, so two at once only contend (and
double the peak memory), and the coder's modules are not documented thread-safe. A request
waiting for the lock gives up at its deadline instead of running after its client has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any, Protocol, TypeVar

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kgcode import __version__

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_NOTE_CHARS",
    "DEFAULT_TIMEOUT_S",
    "CoderLike",
    "create_app",
    "highlights",
    "load_coder",
]

logger = logging.getLogger(__name__)

#: Largest request body accepted (bytes): a batch of 64 long notes fits.
DEFAULT_MAX_BODY_BYTES = 2_000_000
#: Most notes in one ``POST /predict``.
DEFAULT_MAX_BATCH = 64
#: Longest note accepted (characters; the coder itself would silently cut longer ones).
DEFAULT_MAX_NOTE_CHARS = 100_000
#: Seconds a request may take (model work and graph work alike).
DEFAULT_TIMEOUT_S = 30.0
#: Bounds of the neighbourhood query parameters (the CLI allows more; a page cannot draw more).
MAX_HOPS = 4
MAX_VIEW_NODES = 1000
MAX_TOP_K = 100

STATIC_DIR = Path(str(files("kgcode") / "static"))
T = TypeVar("T")


class CoderLike(Protocol):
    """What the service needs from a model: :meth:`kgcode.coder.Coder.predict`'s interface."""

    def predict(
        self, texts: Sequence[str], *, top_k: int | None = None, threshold: float | None = None
    ) -> list[list[dict[str, Any]]]:
        """Per note, ``[{code, title, score, evidence: [{sentence, start, end, weight}]}]``, best first."""
        ...


def load_coder(path: str | Path) -> tuple[CoderLike | None, str | None]:
    """Load a coder folder, lazily importing :mod:`kgcode.coder`.

    Args:
        path: the folder written by ``Coder.save``.

    Returns:
        ``(coder, None)``, or ``(None, why)`` when the module cannot be imported or the folder
        cannot be loaded (logged; the service then runs with "no model loaded").
    """
    try:
        from kgcode.coder import Coder
    except Exception as exc:  # the coder module may be missing or broken: serve the KG anyway
        logger.warning("cannot import kgcode.coder: %s", exc)
        return None, f"cannot import the coder: {_one_line(exc)}"
    try:
        return Coder.load(path), None
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        logger.warning("cannot load the model from %s: %s", path, message)
        return None, f"cannot load the model from {path}: {message}"


# --------------------------------------------------------------------------- request bodies


class NoteIn(BaseModel):
    """One note of a batch."""

    id: str | int | None = Field(None, description="Your id of the note (echoed back; default: its index).")
    text: str = Field(..., description="The note.")


class PredictIn(BaseModel):
    """``POST /predict``: either ``text`` (one note) or ``notes`` (a batch)."""

    text: str | None = Field(None, description="One note.")
    notes: list[NoteIn] | None = Field(None, description="A batch of notes.")
    top_k: int | None = Field(None, ge=1, le=MAX_TOP_K, description="At most this many codes per note.")
    threshold: float | None = Field(None, ge=0.0, le=1.0, description="Probability threshold.")


# --------------------------------------------------------------------------- errors


class _BodyTooLarge(HTTPException):
    """Raised from the body reader: a subclass of HTTPException so FastAPI passes it on unchanged."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large: the limit is {limit:,} bytes")


class _BodyLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` (by Content-Length, or as they stream in)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or ()).get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > self.max_bytes
            except ValueError:
                await _send_json(send, 400, {"detail": "malformed Content-Length header"})
                return
            if too_big:
                await _send_json(send, 413, {"detail": _BodyTooLarge(self.max_bytes).detail})
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


async def _send_json(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = JSONResponse(payload).body
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _validation_message(exc: RequestValidationError) -> str:
    """One line for a body or query that does not validate (malformed JSON first)."""
    parts = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx") or {}
            where = err.get("loc", ("body", 0))
            pos = where[-1] if len(where) > 1 else "?"
            return f"malformed JSON at character {pos}: {ctx.get('error', 'invalid JSON')}"
        loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("body",)) or "body"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts[:5])


# --------------------------------------------------------------------------- highlights


def highlights(text_length: int, codes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Merge the evidence spans of a note's codes into non-overlapping runs.

    Args:
        text_length: the note's length (spans outside it are clipped or dropped).
        codes: the note's codes, each with ``evidence`` items carrying ``start`` and ``end``.

    Returns:
        ``[{"start", "end", "codes": [code, ...]}]`` in text order: every stretch of the note that
        some evidence covers, cut wherever the set of codes covering it changes; codes in rank
        order.

    Example:
        >>> highlights(20, [{"code": "A", "evidence": [{"start": 0, "end": 10}]},
        ...                 {"code": "B", "evidence": [{"start": 5, "end": 15}]}])
        [{'start': 0, 'end': 5, 'codes': ['A']}, {'start': 5, 'end': 10, 'codes': ['A', 'B']}, \
{'start': 10, 'end': 15, 'codes': ['B']}]
    """
    spans: list[tuple[int, int, int]] = []  # (start, end, rank)
    for rank, item in enumerate(codes):
        for ev in item.get("evidence") or ():
            try:
                start, end = max(0, int(ev["start"])), min(text_length, int(ev["end"]))
            except (KeyError, TypeError, ValueError):
                continue
            if start < end:
                spans.append((start, end, rank))
    cuts = sorted({p for s, e, _ in spans for p in (s, e)})
    out: list[dict[str, Any]] = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        ranks = sorted({r for s, e, r in spans if s <= a and e >= b})
        if not ranks:
            continue
        names = [str(codes[r].get("code", "")) for r in ranks]
        if out and out[-1]["end"] == a and out[-1]["codes"] == names:
            out[-1]["end"] = b
        else:
            out.append({"start": a, "end": b, "codes": names})
    return out


def _clean_codes(raw: Any, text_length: int) -> list[dict[str, Any]]:
    """The coder's codes for one note as JSON-ready dicts (offsets clipped to the note)."""
    out = []
    for item in raw or ():
        evidence = []
        for ev in item.get("evidence") or ():
            start, end = max(0, int(ev.get("start", 0))), min(text_length, int(ev.get("end", 0)))
            evidence.append({"sentence": str(ev.get("sentence", "")), "start": start, "end": max(start, end),
                             "weight": float(ev.get("weight", 0.0))})
        out.append({"code": str(item.get("code", "")), "title": str(item.get("title", "")),
                    "score": float(item.get("score", 0.0)), "evidence": evidence})
    return out


# --------------------------------------------------------------------------- the app


class _State:
    """What the app shares between requests: the KG, the model and their locks."""

    def __init__(self, kg: Any, coder: CoderLike | None, model_info: dict[str, Any]) -> None:
        self.kg = kg
        self.coder = coder
        self.model_info = model_info
        self.model_lock = threading.Lock()
        self.mapper_lock = threading.Lock()
        self._mapper: Any = None
        self.counts: dict[str, Any] = {}
        self.started = time.time()

    def mapper(self) -> Any:
        """The shared Mapper (call with :attr:`mapper_lock` held)."""
        if self._mapper is None:
            from kgcode.mapping import Mapper

            self._mapper = Mapper(self.kg)
        return self._mapper


def _warm(kg: Any, state: _State) -> dict[str, Any]:
    """Build the KG's and the mapper's lazy indexes and run the model once now (no request pays for
    them); the KG's counts."""
    from kg.errors import UnknownCodeError

    counts = kg.stats()  # builds the SNOMED CT index
    with contextlib.suppress(UnknownCodeError, ValueError):
        kg.resolve("ICD10CM:Z99.9999")  # builds the suggestion index (an unknown code)
    icd = next((n for n, d in kg.graph._node.items()
                if d.get("system") == "ICD10CM" and d.get("kind") == "code"), None)
    if icd is not None:  # builds the Mapper's indexes once, on the shared mapper
        with contextlib.suppress(ValueError), state.mapper_lock:
            state.mapper().map_id(icd)
    if state.coder is not None:  # the first forward pass allocates and plans kernels: not in a request
        with contextlib.suppress(Exception), state.model_lock:
            state.coder.predict(["Warm-up note: type 2 diabetes mellitus with hypertension."], top_k=1)
    return {k: counts[k] for k in ("nodes", "edges", "nodes_by_system", "edges_by_relation",
                                   "icd10cm_with_snomed", "icd10cm_billable") if k in counts}


def create_app(
    kg: Any,
    coder: CoderLike | None = None,
    *,
    kg_path: str | Path | None = None,
    model_path: str | Path | None = None,
    model_error: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_note_chars: int = DEFAULT_MAX_NOTE_CHARS,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> FastAPI:
    """The FastAPI app serving one KG and, optionally, one coder.

    Args:
        kg: the loaded :class:`kg.graph.KnowledgeGraph` (read-only from now on).
        coder: a loaded coder (see :class:`CoderLike`), or ``None``: ``POST /predict`` answers 503
            "no model loaded" and the page says so.
        kg_path: the KG folder (shown by ``/health``).
        model_path: the model folder (shown by ``/health``).
        model_error: why no model is loaded (shown by ``/health`` and the 503).
        max_body_bytes: largest request body (413 past it).
        max_batch: most notes in one request (422 past it).
        max_note_chars: longest note (422 past it).
        timeout_s: seconds one request may work (504 past it).

    Returns:
        The app; serve it with uvicorn.
    """
    model_info: dict[str, Any] = {"loaded": coder is not None,
                                  "path": str(model_path) if model_path else None,
                                  "error": None if coder is not None else (model_error or "no model given")}
    labels = getattr(coder, "labels", None)
    if labels is not None:
        with contextlib.suppress(TypeError):
            model_info["labels"] = len(labels)
    if hasattr(coder, "runtime_backend"):  # what answers /predict: precision and where the encoder runs
        model_info["inference"] = {"dtype": coder.runtime_dtype, "backend": coder.runtime_backend}
    state = _State(kg, coder, model_info)
    state.counts = _warm(kg, state)
    limits = {"max_body_bytes": max_body_bytes, "max_batch": max_batch, "max_note_chars": max_note_chars,
              "timeout_s": timeout_s}

    app = FastAPI(
        title="kgcode",
        version=__version__,
        description="Knowledge-graph-enhanced ICD-10-CM / ICD-9-CM coding: predict codes for clinical "
                    "notes, look codes up, map them to SNOMED CT / ICD-9-CM and draw their neighbourhood.",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.kgcode = state
    app.add_middleware(_BodyLimit, max_bytes=max_body_bytes)

    # -- errors ------------------------------------------------------------------------------
    from kg.errors import UnknownCodeError
    from ontologies import InvalidCodeError

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        payload = exc.detail if isinstance(exc.detail, dict) else {"detail": exc.detail}
        return JSONResponse(payload, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _validation_message(exc)}, status_code=422)

    @app.exception_handler(UnknownCodeError)
    async def _unknown(request: Request, exc: UnknownCodeError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc), "code": exc.code, "suggestions": exc.suggestions},
                            status_code=404)

    @app.exception_handler(InvalidCodeError)
    async def _malformed(request: Request, exc: InvalidCodeError) -> JSONResponse:
        return JSONResponse({"detail": _one_line(exc)}, status_code=422)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        logger.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "internal error (logged by the server)"}, status_code=500)

    async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run blocking work in a worker thread under the request timeout."""
        try:
            return await asyncio.wait_for(run_in_threadpool(fn, *args, **kwargs), timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, f"the request took longer than {timeout_s:g} s") from None

    # -- prediction --------------------------------------------------------------------------

    def _predict(texts: list[str], top_k: int | None, threshold: float | None, deadline: float) -> Any:
        if not state.model_lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise TimeoutError("waited too long for the model")
        try:
            kwargs: dict[str, Any] = {}
            if top_k is not None:
                kwargs["top_k"] = top_k
            if threshold is not None:
                kwargs["threshold"] = threshold
            return state.coder.predict(texts, **kwargs)  # type: ignore[union-attr]
        finally:
            state.model_lock.release()

    @app.post("/predict", summary="Predict the codes of one note or a batch of notes")
    async def predict(body: PredictIn) -> dict[str, Any]:
        """One note (``text``) or a batch (``notes``): ranked codes with evidence and highlights."""
        if (body.text is None) == (body.notes is None):
            raise HTTPException(422, "give either 'text' (one note) or 'notes' (a batch), "
                                     "not both or neither")
        notes = [NoteIn(id=None, text=body.text)] if body.text is not None else list(body.notes or ())
        if not notes:
            raise HTTPException(422, "'notes' is empty")
        if len(notes) > max_batch:
            raise HTTPException(422, f"too many notes: {len(notes)}; the limit is {max_batch} per request")
        for i, note in enumerate(notes):
            which = "the note" if body.text is not None else f"note {i}"
            if len(note.text) > max_note_chars:
                raise HTTPException(422, f"{which} is too long: {len(note.text):,} characters; "
                                         f"the limit is {max_note_chars:,}")
            if not any(c.isalpha() for c in note.text):
                raise HTTPException(422, f"{which} is empty or has no text to code")
        if state.coder is None:
            raise HTTPException(503, {"detail": f"no model loaded: {model_info['error']}",
                                      "model_loaded": False})
        texts = [n.text for n in notes]
        deadline = time.monotonic() + timeout_s
        try:
            raw = await run(_predict, texts, body.top_k, body.threshold, deadline)
        except TimeoutError:
            raise HTTPException(504, f"the model was busy for longer than {timeout_s:g} s") from None
        except ValueError as exc:  # InvalidNoteError and the like: the note's fault
            raise HTTPException(422, _one_line(exc)) from None
        results = []
        for i, (note, codes) in enumerate(zip(notes, raw, strict=True)):
            clean = _clean_codes(codes, len(note.text))
            results.append({"id": note.id if note.id is not None else i, "codes": clean,
                            "highlights": highlights(len(note.text), clean)})
        if body.text is not None:
            one = results[0]
            return {"codes": one["codes"], "highlights": one["highlights"], "text_length": len(body.text)}
        return {"results": results}

    # -- codes -------------------------------------------------------------------------------

    code_param = PathParam(..., description="A code in any spelling: E11.9, e119, ICD9CM:250.00, "
                                            "SCTID:44054006.")

    @app.get("/codes/{code}", summary="One code's record (what `kgcode kg show` prints)")
    async def code_record(code: str = code_param) -> dict[str, Any]:
        """Title, hierarchy, instructional notes, GEM and SNOMED CT links of one code."""
        from kg.describe import describe

        return await run(describe, state.kg, code)

    def _view(code: str, hops: int, relations: str | None, max_nodes: int) -> Any:
        from kg.neighborhood import check_relations, neighborhood

        try:
            chosen = check_relations(relations.split(",")) if relations is not None else None
        except ValueError as exc:
            raise HTTPException(422, _one_line(exc)) from None
        return neighborhood(state.kg, [code], hops=hops, relations=chosen, max_nodes=max_nodes)

    def _html(nb: Any) -> str:
        from kg.viz import render_html

        with tempfile.TemporaryDirectory(prefix="kgcode-view-") as tmp:
            path = render_html(nb, Path(tmp) / "view.html")
            return path.read_text(encoding="utf-8")

    async def _neighborhood(
        code: str, hops: int, relations: str | None, max_nodes: int, fmt: str
    ) -> Response:
        from kg.viz import neighborhood_json

        nb = await run(_view, code, hops, relations, max_nodes)
        if fmt == "html":
            return HTMLResponse(await run(_html, nb))
        return JSONResponse(await run(neighborhood_json, nb))

    hops_q = Query(2, ge=0, le=MAX_HOPS, description="Nodes up to this many edges away.")
    rel_q = Query(None, description="Relations to follow, comma-separated (default: all).")
    max_q = Query(150, ge=1, le=MAX_VIEW_NODES,
                  description="The most nodes; larger views are cut by a stated rule.")

    @app.get("/codes/{code}/neighborhood",
             summary="The neighbourhood of a code (JSON, or HTML with format=html)")
    async def code_neighborhood(
        code: str = code_param, hops: int = hops_q, relations: str | None = rel_q, max_nodes: int = max_q,
        format: str = Query("json", pattern="^(json|html)$", description="json or html"),  # noqa: A002
    ) -> Response:
        """Nodes, edges, cut rule, legend and vis-network objects; or the self-contained page."""
        return await _neighborhood(code, hops, relations, max_nodes, format)

    @app.get("/codes/{code}/neighborhood.html", response_class=HTMLResponse,
             summary="The neighbourhood of a code as a self-contained page")
    async def code_neighborhood_html(
        code: str = code_param, hops: int = hops_q, relations: str | None = rel_q, max_nodes: int = max_q,
    ) -> Response:
        """The pyvis page of :func:`kg.viz.render_html` (opens with no network)."""
        return await _neighborhood(code, hops, relations, max_nodes, "html")

    # -- mapping -----------------------------------------------------------------------------

    def _map(code: str, to: str, top_k: int) -> dict[str, Any]:
        from kgcode.mapping import MappingError, explain, target_system

        with state.mapper_lock:
            mapper = state.mapper()
            try:
                system = target_system(to)
                node = mapper.resolve(code)
                targets = mapper.map_id(node, to=to, top_k=top_k)
            except MappingError as exc:
                raise HTTPException(422, _one_line(exc)) from None
            note = mapper.no_target_note(node, to) if not targets else None
        return {"code": node, "title": state.kg.graph.nodes[node].get("title", ""), "to": system,
                "targets": [{**t.to_dict(), "explanation": explain(t)} for t in targets], "note": note}

    @app.get("/map/{code}", summary="Map a code to SNOMED CT, ICD-10-CM or ICD-9-CM")
    async def map_endpoint(
        code: str = code_param,
        to: str = Query("SNOMEDCT", description="SNOMEDCT, ICD10CM or ICD9CM"),
        top_k: int = Query(10, ge=1, le=MAX_TOP_K),
    ) -> dict[str, Any]:
        """Ranked targets, each with kind (exact, gem, inherited), score, provenance and explanation."""
        return await run(_map, code, to, top_k)

    # -- health, docs, page ------------------------------------------------------------------

    @app.get("/health", summary="Status, KG counts, model, versions and limits")
    async def health() -> dict[str, Any]:
        """Always 200 while the service runs; ``model.loaded`` says whether ``/predict`` works."""
        import fastapi

        return {
            "status": "ok",
            "kg": {"path": str(kg_path) if kg_path else None, **state.counts},
            "model": model_info,
            "limits": limits,
            "versions": {"kgcode": __version__, "python": platform.python_version(),
                         "fastapi": fastapi.__version__},
            "uptime_s": round(time.time() - state.started, 1),
        }

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def docs() -> FileResponse:
        return FileResponse(STATIC_DIR / "docs.html", media_type="text/html")

    vis_dir = _vis_dir()

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> FileResponse:
        if name in ("vis-network.min.js", "vis-network.css") and vis_dir is not None:
            return FileResponse(vis_dir / name)
        path = STATIC_DIR / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise HTTPException(404, f"no such file: /static/{name}")
        return FileResponse(path)

    return app


def _vis_dir() -> Path | None:
    """The folder of the vis-network build shipped in pyvis (newest version)."""
    try:
        import pyvis
    except ImportError:
        return None
    lib = Path(pyvis.__file__).parent / "templates" / "lib"
    found = sorted(lib.glob("vis-*/vis-network.min.js"), key=lambda p: [
        int(x) if x.isdigit() else 0 for x in p.parent.name.removeprefix("vis-").split(".")])
    if not found:
        logger.warning("pyvis ships no vis-network.min.js under %s: the page cannot draw graphs", lib)
        return None
    return found[-1].parent
