"""``kgcode train-linker``: train the ICD-10-CM -> SNOMED CT link predictor behind ``predicted`` links."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import click

from kgcode.cli_common import kg_option, load_kg_option

__all__ = ["linker_command"]

logger = logging.getLogger(__name__)


@click.command("train-linker")
@kg_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to save the predictor folder (default: the user cache dir, where `kgcode map` looks).",
)
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the folds and initialisations.")
@click.option(
    "--gnn",
    default="rgcn",
    show_default=True,
    help="Graph encoder (registry name).",
)
@click.option("--gnn-epochs", default=None, type=click.IntRange(1, 10_000), help="Graph-encoder epochs.")
@click.option(
    "--embedding-cache",
    "--cache-dir",
    "embedding_cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Text-embedding cache folder (default: <cache dir>/embeddings).",
)
@click.option(
    "--threads",
    default=None,
    type=click.IntRange(1, 256),
    help="Torch threads (1 is often fastest on a small shared machine).",
)
@click.pass_context
def linker_command(
    ctx: click.Context,
    kg_dir: Path | None,
    out: Path | None,
    seed: int,
    gnn: str,
    gnn_epochs: int | None,
    embedding_cache: Path | None,
    threads: int | None,
) -> None:
    """Train the SNOMED CT link predictor on ALL known ICD-10-CM -> SNOMED CT links and save it.

    The first run embeds the texts of ~150,000 codes and concepts with MiniLM (once; cached), then
    trains the graph encoder and the reranker (minutes). `kgcode map` then adds `predicted`
    links, each with a calibrated score and the DO/Mondo concept that carries the SNOMED CT id.
    """
    import torch

    from kgcode.snomed_predictor import PredictorConfig, default_predictor_dir, train_predictor

    if threads:
        torch.set_num_threads(threads)
    progress = getattr(ctx.find_root().obj, "progress", None)
    graph = load_kg_option(kg_dir)
    config = PredictorConfig(gnn=gnn)
    if gnn_epochs:
        config.gnn_epochs = gnn_epochs
    start = time.perf_counter()
    try:
        predictor = train_predictor(
            graph,
            seed=seed,
            config=config,
            embedding_cache=embedding_cache if embedding_cache is not None else "default",
            progress=progress,
        )
    except (KeyError, ValueError) as exc:
        click.echo(f"kgcode: error: {exc}", err=True)
        ctx.exit(2)
    target = predictor.save(out if out is not None else default_predictor_dir())
    card = predictor.card
    precision = card.get("oof_precision_at_threshold")
    click.echo(
        f"trained the SNOMED CT link predictor on {card['training_codes']:,} linked codes in "
        f"{time.perf_counter() - start:.0f} s; threshold {predictor.threshold:.3f}"
        + (f" (out-of-fold precision {precision:.2f})" if precision is not None else "")
        + f" -> {target}"
    )
