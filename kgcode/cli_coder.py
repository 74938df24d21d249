"""``kgcode train``, ``kgcode predict`` and ``kgcode eval``: the coder on the command line.

The three commands are plain click commands; the ``kgcode`` group adds them with
``cli.add_command(train_command)`` (and the two others). User errors (a missing file, a coder folder
of another format version, a bad config) are one line on stderr and exit code 2.

Bad input to ``predict`` is handled per record: an empty or whitespace-only note, a note that is
not UTF-8, a JSONL line that is not JSON or has no ``text``: one line on stderr naming the record
(``kgcode: error: record 3 (line 3): ...``), the other records are still coded. The exit code is 2
only when no record could be coded. A note over 50,000 characters (e.g. a 1 MB note) is
**truncated** to its first 50,000 characters with a warning on stderr, not rejected.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

__all__ = [
    "BACKEND_CHOICES",
    "DTYPE_CHOICES",
    "apply_inference_options",
    "backend_option",
    "dtype_option",
    "unseen_offset_option",
    "eval_command",
    "predict_command",
    "train_command",
]

logger = logging.getLogger(__name__)


def _fail(message: str) -> None:
    """One line on stderr and exit code 2."""
    click.echo(f"kgcode: error: {message}", err=True)
    raise SystemExit(2)


def _progress(ctx: click.Context) -> bool | None:
    return getattr(ctx.obj, "progress", None)


#: the values of ``--dtype`` (kgcode.coder.INFERENCE_DTYPES, spelled out so --help imports no torch)
DTYPE_CHOICES = ("auto", "fp32", "bf16", "int8")

dtype_option = click.option(
    "--dtype", type=click.Choice(DTYPE_CHOICES), default=None,
    help="Inference precision (default: the model's inference_dtype). auto: bf16 where the CPU has "
         "native bf16, else fp32; int8: the note encoder dynamically quantized (faster on CPUs "
         "without bf16, scores change a little).",
)


#: the values of ``--backend`` (kgcode.coder.INFERENCE_BACKENDS)
BACKEND_CHOICES = ("torch", "onnx")

backend_option = click.option(
    "--backend", type=click.Choice(BACKEND_CHOICES), default=None,
    help="Where the note encoder runs (default: the model's inference_backend, torch). onnx: ONNX "
         "Runtime with a fused graph (needs pip install 'kgcode[onnx]'; exported once, about 10 s); "
         "with --dtype int8 the fastest on CPUs.",
)


#: ``--unseen-offset``: the operating point between seen and long-tail codes (Coder.set_unseen_offset)
unseen_offset_option = click.option(
    "--unseen-offset", type=click.FloatRange(-10.0, 10.0), default=None,
    help="Logit offset of the codes without training notes (default: the model's, tuned on dev). "
         "Larger puts more long-tail codes in the top codes and above the threshold, at some cost "
         "to the codes seen in training (see the README's unseen-code trade-off).",
)


def _load_coder(
    model: Path, dtype: str | None = None, backend: str | None = None, unseen_offset: float | None = None
) -> Any:
    from kgcode.coder import Coder, CoderFormatError

    try:
        coder = Coder.load(model)
    except CoderFormatError as err:
        _fail(str(err).splitlines()[0])
    except (OSError, ValueError) as err:
        _fail(f"cannot load the coder in {model}: {str(err).splitlines()[0]}")
    problem = apply_inference_options(coder, dtype, backend, unseen_offset)
    if problem:
        _fail(problem)
    return coder


def apply_inference_options(
    coder: Any, dtype: str | None, backend: str | None, unseen_offset: float | None = None
) -> str | None:
    """Apply ``--dtype`` / ``--backend`` to a loaded coder, or check the model's own settings, and
    ``--unseen-offset`` when given.

    Either way the note encoder the coder will run is set up now (the int8 copy, the ONNX Runtime
    session), so a setting this machine cannot run fails before the first note.

    Returns:
        ``None``, or a one-line message naming the options (or the model's config) and the problem.
    """
    if unseen_offset is not None:
        try:
            coder.set_unseen_offset(unseen_offset)
        except ValueError as err:
            return f"--unseen-offset: {err}"
    try:
        coder.set_inference(dtype or coder.config.inference_dtype, backend or coder.config.inference_backend)
    except ValueError as err:
        flags = " ".join(f"--{k} {v}" for k, v in (("dtype", dtype), ("backend", backend)) if v)
        if not flags:
            flags = (
                f"the model's inference_dtype {coder.config.inference_dtype!r} / "
                f"inference_backend {coder.config.inference_backend!r} (override with --dtype/--backend)"
            )
        return f"{flags}: {str(err).splitlines()[0]}"
    return None


# =========================================================================== train


@click.command("train")
@click.option("--train", "train_path", required=True, type=click.Path(path_type=Path),
              help="Training data: a CodiEsp split folder, a .jsonl file or a MIMIC folder.")
@click.option("--dev", "dev_path", required=True, type=click.Path(path_type=Path),
              help="Dev data (same formats): selects the epoch and tunes the threshold.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The coder folder to write.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="YAML config with model/training sections (default: configs/coder.yaml's defaults).")
@click.option("--kg", "kg_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="KG folder (default: the last KG built).")
@click.option("--resume", is_flag=True, help="Continue from the last checkpoint in OUT.checkpoints/.")
@click.option("--embedding-cache", "--cache-dir", "cache_dir",
              type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Text-embedding cache folder (default: <kgcode cache>/embeddings).")
@click.option("--seed", type=int, default=None, help="Override the config's seed.")
@click.pass_context
def train_command(
    ctx: click.Context, train_path: Path, dev_path: Path, out: Path, config_file: Path | None,
    kg_dir: Path | None, resume: bool, cache_dir: Path | None, seed: int | None,
) -> None:
    """Train a coder on TRAIN, choose epoch and threshold on DEV, save it to OUT.

    Runs under `torchrun --nproc_per_node N` too (DistributedDataParallel; rank 0 saves).
    """
    from kgcode import paths
    from kgcode.coder import CoderConfig
    from kgcode.training import TrainConfig, load_config_file, train

    for what, path in (("--train", train_path), ("--dev", dev_path)):
        if not path.exists():
            _fail(f"{what}: no such file or folder: {path}")
    model_cfg, train_cfg, metadata = CoderConfig(), TrainConfig(), {}
    if config_file is not None:
        if not config_file.is_file():
            _fail(f"--config: no such file: {config_file}")
        try:
            model_cfg, train_cfg, metadata = load_config_file(config_file)
        except ValueError as err:
            _fail(str(err))
        metadata = {**metadata, "config_file": str(config_file)}
    if seed is not None:
        train_cfg.seed = seed
    if kg_dir is None:
        kg_dir = paths.last_kg_dir()
        if kg_dir is None:
            _fail("no KG built yet: run `kgcode kg build` first or pass --kg DIR")
    elif not kg_dir.is_dir():
        _fail(f"--kg: no such folder: {kg_dir}")
    from kg import KGFormatError, load_kg

    try:
        kg = load_kg(kg_dir)
    except (KGFormatError, OSError) as err:
        _fail(str(err).splitlines()[0])
    ckpt = Path(f"{out}.checkpoints")
    try:
        result = train(train_path=train_path, dev_path=dev_path, kg=kg, config=model_cfg, training=train_cfg,
                       metadata=metadata, cache_dir=cache_dir, checkpoint_dir=ckpt, resume=resume,
                       show_progress_bar=_progress(ctx))
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err).splitlines()[0])
        return
    if int(os.environ.get("RANK", "0")) != 0:
        return
    folder = result.save_to_directory(out)
    m = result.metrics
    unseen = m["buckets"].get("unseen") or {}
    click.echo(
        f"trained in {result.seconds:.0f} s -> {folder}\n"
        f"dev: MAP {m['map']:.4f}  micro-F1 {m['micro_f1']:.4f} (P {m['micro_precision']:.4f}, "
        f"R {m['micro_recall']:.4f}) at threshold {m['threshold']:.3f}  R@10 {m['r@10']:.4f}  "
        f"unseen R@10 {_fmt(unseen.get('r@10'))}"
    )


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


# =========================================================================== predict


def _records(data: bytes, name: str) -> Iterator[tuple[int, str, str | None, str | None]]:
    """``(record number, id, text or None, error or None)`` for each record of an input.

    JSON lines when the first non-blank character is ``{`` (or the file is ``.jsonl``), else the
    whole input is one plain-text note.
    """
    head = data.lstrip()[:1]
    if name.endswith(".jsonl") or head == b"{":
        n = 0
        for lineno, raw in enumerate(data.split(b"\n"), start=1):
            if not raw.strip():
                continue
            n += 1
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                why = f"not UTF-8 ({err.reason} at byte {err.start})"
                yield n, f"line-{lineno}", None, f"record {n} (line {lineno}): {why}"
                continue
            try:
                obj = json.loads(line)
            except ValueError as err:
                yield n, f"line-{lineno}", None, f"record {n} (line {lineno}): not JSON ({err})"
                continue
            if not isinstance(obj, dict):
                yield n, f"line-{lineno}", None, f"record {n} (line {lineno}): expected a JSON object"
                continue
            rid = str(obj.get("id")) if obj.get("id") not in (None, "") else f"line-{lineno}"
            text = obj.get("text")
            if text is None:
                yield n, rid, None, f"record {n} (line {lineno}, id {rid}): missing 'text'"
            elif not isinstance(text, str):
                yield n, rid, None, f"record {n} (line {lineno}, id {rid}): 'text' is not a string"
            else:
                yield n, rid, text, None
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        yield 1, name, None, f"record 1 ({name}): not UTF-8 ({err.reason} at byte {err.start})"
        return
    yield 1, name, text, None


@click.command("predict")
@click.option("--model", required=True, type=click.Path(path_type=Path), help="The coder folder.")
@click.argument("source", required=False, default="-")
@click.option("--top-k", type=click.IntRange(1, 1000), default=None,
              help="Codes per note (default: the model's).")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None,
              help="Probability threshold (default: tuned on dev; 0 = the top k whatever the score).")
@click.option("--evidence", type=click.IntRange(0, 50), default=3, show_default=True,
              help="Evidence sentences per code.")
@click.option("--batch-size", type=click.IntRange(1, 1024), default=None, help="Notes per batch.")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "text"]), default="jsonl", show_default=True,
              help="jsonl: one JSON object per note; text: a readable list with the evidence sentences.")
@unseen_offset_option
@dtype_option
@backend_option
@click.pass_context
def predict_command(
    ctx: click.Context, model: Path, source: str, top_k: int | None, threshold: float | None, evidence: int,
    batch_size: int | None, fmt: str, unseen_offset: float | None, dtype: str | None, backend: str | None,
) -> None:
    """Code the notes in SOURCE (a text file, a JSONL file with id/text, or - for stdin): JSONL out.

    One output line per coded note: {"id", "codes": [{"code", "title", "score", "evidence":
    [{"sentence", "start", "end", "weight"}]}]}. With ``--format text``, a readable list instead.
    """
    from kgcode.coder import InvalidNoteError, check_note

    if source == "-":
        with click.open_file("-", "rb") as fh:
            data, name = fh.read(), "<stdin>"
    else:
        path = Path(source)
        if not path.is_file():
            _fail(f"no such file: {source}")
        data, name = path.read_bytes(), path.name
    coder = _load_coder(model, dtype, backend, unseen_offset)
    good: list[tuple[str, str]] = []
    errors = 0
    for n, rid, text, error in _records(data, name):
        if error is None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    text = check_note(text, max_chars=coder.config.max_note_chars)
                except InvalidNoteError as err:
                    error = f"record {n} (id {rid}): {err}"
            for w in caught:
                click.echo(f"kgcode: warning: record {n} (id {rid}): {w.message}", err=True)
        if error is not None:
            click.echo(f"kgcode: error: {error}", err=True)
            errors += 1
            continue
        good.append((rid, text))  # type: ignore[arg-type]
    if not good:
        _fail("no note could be coded" + (f" ({errors} bad record(s))" if errors else " (empty input)"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = coder.predict([t for _, t in good], top_k=top_k, threshold=threshold, evidence=evidence,
                                batch_size=batch_size, show_progress_bar=_progress(ctx))
    for (rid, _), codes in zip(good, results, strict=True):
        if fmt == "text":
            click.echo(_readable(rid, codes))
        else:
            click.echo(json.dumps({"id": rid, "codes": codes}, ensure_ascii=False))
    if errors:
        logger.warning("%d record(s) could not be coded", errors)


def _readable(rid: str, codes: list[dict[str, Any]]) -> str:
    """One note's codes as a readable block: rank, code, score, title, then the evidence sentences."""
    lines = [f"{rid}: {len(codes)} code(s)"]
    for rank, c in enumerate(codes, start=1):
        lines.append(f"  {rank:>2}. {c['code']:<18} {c['score']:.3f}  {c.get('title', '')}")
        for ev in c.get("evidence", []):
            lines.append(f"        [{ev['start']}:{ev['end']}] \"{ev['sentence']}\"")
    if not codes:
        lines.append("  (no code above the threshold; try --threshold 0 for the top codes)")
    return "\n".join(lines)


# =========================================================================== eval


def _table(m: dict[str, Any], n_notes: int, part: str) -> str:
    lines = [f"{n_notes} notes ({part}), threshold {m['threshold']:.3f}", ""]
    rows = [("MAP", m["map"]), ("micro precision", m["micro_precision"]), ("micro recall", m["micro_recall"]),
            ("micro F1", m["micro_f1"]), ("macro F1 (all codes)", m["macro_f1"]),
            ("macro F1 (codes present)", m["macro_f1_present"]), ("P@5", m["p@5"]), ("P@8", m["p@8"]),
            ("P@15", m["p@15"]), ("R@10", m["r@10"]), ("R@50", m["r@50"])]
    lines += [f"  {k:<26} {v:.4f}" for k, v in rows]
    lines += ["", f"  {'training frequency':<20} {'F1':>8} {'R@10':>8} {'mentions':>9}"]
    for label, b in m["buckets"].items():
        lines.append(f"  {label:<20} {_fmt(b['f1']):>8} {_fmt(b['r@10']):>8} {b['n']:>9}")
    return "\n".join(lines)


@click.command("eval")
@click.option("--model", required=True, type=click.Path(path_type=Path), help="The coder folder.")
@click.option("--data", "data_path", required=True, type=click.Path(path_type=Path),
              help="Coded notes: a CodiEsp split folder, a .jsonl file or a MIMIC folder.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
@click.option("--part", type=click.Choice(["all", "zero_shot", "supervised"]), default="all",
              show_default=True,
              help="Score with the whole head or one path of the hybrid head.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0), default=None, help="Default: the tuned one.")
@click.option("--kg", "kg_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="KG that maps MeSH/OMIM-coded data (PubTator, e.g. NCBI disease) to ICD-10-CM "
                   "(default: the last KG built).")
@unseen_offset_option
@dtype_option
@backend_option
@click.pass_context
def eval_command(
    ctx: click.Context, model: Path, data_path: Path, as_json: bool, part: str, threshold: float | None,
    kg_dir: Path | None, unseen_offset: float | None, dtype: str | None, backend: str | None,
) -> None:
    """Evaluate a coder on coded notes: MAP, micro/macro P/R/F1, P@k, R@k, frequency buckets.

    DATA may also be a PubTator file (the NCBI disease corpus): its MeSH/OMIM ids are mapped to
    ICD-10-CM through the KG's Disease Ontology and Mondo cross-references (a silver standard).
    """
    from kgcode.datasets import read_dataset
    from kgcode.training import encode_notes, evaluate_coder, prepare_notes

    if not data_path.exists():
        _fail(f"--data: no such file or folder: {data_path}")
    coder = _load_coder(model, dtype, backend, unseen_offset)
    try:
        notes, report = read_dataset(data_path)
    except (ValueError, FileNotFoundError) as err:
        _fail(str(err).splitlines()[0])
        return
    silver = None
    if any(c.startswith(("MESH:", "OMIM:")) for n in notes for c in n.codes):
        from kg import KGFormatError, load_kg
        from kgcode import paths
        from kgcode.datasets import silver_icd10cm

        kg_dir = kg_dir or paths.last_kg_dir()
        if kg_dir is None or not kg_dir.is_dir():
            _fail("the data is coded with MeSH/OMIM ids: mapping them to ICD-10-CM needs a KG "
                  "(--kg DIR or `kgcode kg build`)")
        try:
            notes, silver_report = silver_icd10cm(notes, load_kg(kg_dir))
        except (KGFormatError, OSError) as err:
            _fail(str(err).splitlines()[0])
            return
        silver = dict(silver_report.counts)
    notes, prep = prepare_notes(notes, coder.label_row)
    notes = [n for n in notes if n.codes]
    if not notes:
        _fail(f"{data_path}: no note with a gold code in the coder's label set")
    encoded = encode_notes(coder, notes, inference=True, show_progress_bar=_progress(ctx))
    try:
        metrics = evaluate_coder(coder, encoded, part=part, threshold=threshold)
    except ValueError as err:
        _fail(str(err))
        return
    metrics["data"] = {"path": str(data_path), "notes": len(notes), "codes_dropped": prep["codes_dropped"],
                       "mentions_mapped": prep["mentions_mapped"], "invalid_rows": len(report.invalid)}
    if silver is not None:
        metrics["data"]["silver_icd10cm"] = silver
    metrics["part"] = part
    metrics["unseen_offset"] = coder.unseen_offset
    metrics["inference_dtype"] = coder.runtime_dtype
    metrics["inference_backend"] = coder.runtime_backend
    if as_json:
        click.echo(json.dumps(metrics, indent=2, default=float))
    else:
        click.echo(_table(metrics, len(notes), part))
    if sys.stdout.isatty():
        sys.stdout.flush()
