"""``kgcode serve``: the HTTP service and its page (see :mod:`kgcode.service`)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from kgcode.cli_coder import apply_inference_options, backend_option, dtype_option, unseen_offset_option
from kgcode.cli_common import kg_option, load_kg_option

__all__ = ["serve_command"]

logger = logging.getLogger(__name__)


@click.command("serve")
@click.option("--model", "model_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="A trained coder folder; without one, /predict answers 'no model loaded' (503) "
                   "and code lookup still works.")
@kg_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port, logged).")
@click.option("--timeout", "timeout_s", default=30.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="Seconds one request may work before it gets 504.")
@click.option("--max-batch", default=64, show_default=True, type=click.IntRange(1, 10_000),
              help="Most notes in one POST /predict.")
@click.option("--max-body-mb", default=2.0, show_default=True, type=click.FloatRange(0.01, 1024),
              help="Largest request body (MB).")
@unseen_offset_option
@dtype_option
@backend_option
def serve_command(
    model_dir: Path | None,
    kg_dir: Path | None,
    host: str,
    port: int,
    timeout_s: float,
    max_batch: int,
    max_body_mb: float,
    unseen_offset: float | None,
    dtype: str | None,
    backend: str | None,
) -> None:
    """Serve predictions, code lookup, mappings and neighbourhood views over HTTP, with a page at /.

    The KG (and the model, with --model) is loaded once and shared by all requests. The page and
    every resource it uses come from the service itself: it works offline. The OpenAPI schema is
    at /openapi.json (and an offline endpoint list at /docs).

    Example: ``kgcode serve --model models/coder --port 8000``, then open http://127.0.0.1:8000/.
    """
    import uvicorn

    from kgcode.service import create_app, load_coder

    graph = load_kg_option(kg_dir)
    coder, error = (None, "no --model given") if model_dir is None else load_coder(model_dir)
    if model_dir is not None and coder is None:
        click.echo(f"kgcode: warning: {error}; serving without a model", err=True)
    problem = None if coder is None else apply_inference_options(coder, dtype, backend, unseen_offset)
    if problem:
        raise click.UsageError(problem)
    app = create_app(graph, coder, kg_path=kg_dir or getattr(graph, "path", None), model_path=model_dir,
                     model_error=error, timeout_s=timeout_s, max_batch=max_batch,
                     max_body_bytes=int(max_body_mb * 1_000_000))
    click.echo(f"kgcode: serving on http://{host}:{port}/ (model: {'loaded' if coder else 'none'}); "
               "Ctrl-C stops", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
