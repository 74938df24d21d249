"""`kgcode train`, `predict`, `eval` as a user runs them: bad input per record, one-line errors, exit 2."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from kgcode.cli_coder import eval_command, predict_command, train_command
from tests.fixtures.coder.helpers import DEV, TRAIN, build_mini_kg, tiny_yaml


class _State:
    progress = False


@click.group()
@click.pass_context
def group(ctx: click.Context) -> None:
    ctx.obj = _State()


for _command in (train_command, predict_command, eval_command):
    group.add_command(_command)


def run(*args: str, **kw: object) -> object:
    return CliRunner().invoke(group, [str(a) for a in args], catch_exceptions=False, **kw)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    kg_dir = root / "kg"
    build_mini_kg(kg_dir)
    cfg = tiny_yaml(root / "tiny.yaml")
    out = root / "coder"
    result = run("train", "--train", TRAIN, "--dev", DEV, "--out", out, "--config", cfg, "--kg", kg_dir,
                 "--cache-dir", root / "emb")
    assert result.exit_code == 0, result.output
    assert "dev: MAP" in result.output and "unseen R@10" in result.output
    return out


def test_train_writes_a_coder_folder_and_checkpoints(model: Path) -> None:
    assert (model / "config.json").is_file() and (model / "train_config.yaml").is_file()
    assert (Path(f"{model}.checkpoints") / "last.pt").is_file()


def test_train_resume_and_user_errors(model: Path, tmp_path: Path) -> None:
    kg_dir = model.parent / "kg"
    cfg = tiny_yaml(tmp_path / "t.yaml", epochs=3)
    out = tmp_path / "again"
    shutil.copytree(Path(f"{model}.checkpoints"), Path(f"{out}.checkpoints"))
    result = run("train", "--train", TRAIN, "--dev", DEV, "--out", out, "--config", cfg, "--kg", kg_dir,
                 "--embedding-cache", model.parent / "emb", "--resume")  # the same option as --cache-dir
    assert result.exit_code == 0, result.output
    history = json.loads((out / "model_card.json").read_text())["history"]
    assert [h["epoch"] for h in history if h["stage"] == "notes"] == [1, 2, 3]
    for args, message in [
        (["--train", tmp_path / "nope", "--dev", DEV], "no such file"),
        (["--train", TRAIN, "--dev", DEV, "--kg", tmp_path / "nokg"], "no such folder"),
        (["--train", TRAIN, "--dev", DEV, "--kg", kg_dir, "--config", tmp_path / "missing.yaml"],
         "no such file"),
    ]:
        result = run("train", *args, "--out", tmp_path / "x")
        assert result.exit_code == 2
        assert result.output.startswith("kgcode: error:") and message in result.output
        assert len(result.output.strip().splitlines()) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  epochz: 1\n")
    result = run("train", "--train", TRAIN, "--dev", DEV, "--out", tmp_path / "x", "--kg", kg_dir,
                 "--config", bad)
    assert result.exit_code == 2 and "epochz" in result.output


def test_predict_plain_text_and_jsonl(model: Path, tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("Type 2 diabetes mellitus without complications.\nHe takes insulin.\n")
    result = run("predict", "--model", model, note, "--top-k", 3, "--threshold", 0)
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["id"] == "note.txt" and len(record["codes"]) == 3
    assert {"code", "title", "score", "evidence"} <= set(record["codes"][0])
    jsonl = '{"id": "a", "text": "Fracture of the femur."}\n{"id": "b", "text": "Type 1 diabetes."}\n'
    result = run("predict", "--model", model, "-", "--threshold", 0, "--top-k", 2, input=jsonl)
    assert result.exit_code == 0
    lines = [json.loads(x) for x in result.output.splitlines()]
    assert [x["id"] for x in lines] == ["a", "b"] and lines[0]["codes"][0]["code"].startswith("ICD10CM:S72")
    result = run("predict", "--model", model, note, "--top-k", 2, "--threshold", 0, "--format", "text")
    assert result.exit_code == 0, result.output
    out = result.output.splitlines()
    assert out[0] == "note.txt: 2 code(s)" and out[1].lstrip().startswith("1. ICD10CM:")
    assert any(line.strip().startswith("[") and "diabetes" in line for line in out), out


def test_the_kgcode_group_has_the_coder_commands() -> None:
    from kgcode.cli import cli

    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("train", "predict", "eval"):
        assert f"  {name} " in result.output, result.output


def test_predict_reports_each_bad_record_and_codes_the_others(model: Path, tmp_path: Path) -> None:
    src = tmp_path / "mixed.jsonl"
    src.write_bytes(
        b'{"id": "ok", "text": "Type 2 diabetes mellitus."}\n'
        b'this is not json\n'
        b'{"id": "empty", "text": ""}\n'
        b'{"id": "blank", "text": "   \\n  "}\n'
        b'{"id": "notext"}\n'
        b'{"id": "bytes", "text": "caf\xff"}\n'
        b'{"id": "big", "text": "' + b"Fever and cough.\\n" * 62_000 + b'"}\n'
    )
    result = CliRunner().invoke(group, ["predict", "--model", str(model), str(src), "--threshold", "0"])
    assert result.exit_code == 0
    ids = [json.loads(x)["id"] for x in result.stdout.splitlines()]
    assert ids == ["ok", "big"]
    err = result.stderr
    assert "record 2 (line 2): not JSON" in err
    assert "record 3 (id empty): empty note" in err
    assert "record 4 (id blank): note is whitespace only" in err
    assert "record 5 (line 5, id notext): missing 'text'" in err
    assert "record 6 (line 6): not UTF-8" in err
    assert "record 7 (id big): warning" not in err and "truncated" in err


def test_predict_exits_2_when_nothing_could_be_coded(model: Path, tmp_path: Path) -> None:
    for name, content in (("in.txt", b""), ("in.txt", b"   \n\t"), ("in.txt", b"\xff\xfe\x00bad"),
                          ("in.jsonl", b"not json\n{\"id\": 1}\n")):
        src = tmp_path / name
        src.write_bytes(content)
        result = CliRunner().invoke(group, ["predict", "--model", str(model), str(src)])
        assert result.exit_code == 2, content
        assert "no note could be coded" in result.stderr


def test_eval_json_has_the_issue_keys(model: Path) -> None:
    result = run("eval", "--model", model, "--data", DEV, "--json")
    assert result.exit_code == 0, result.output
    m = json.loads(result.output)
    for key in ("map", "micro_precision", "micro_recall", "micro_f1", "macro_f1", "p@8", "r@10"):
        assert isinstance(m[key], float)
    assert set(m["buckets"]) == {"unseen", "1-5", "6-20", ">20"}
    assert {"f1", "r@10", "n"} <= set(m["buckets"]["unseen"])
    table = run("eval", "--model", model, "--data", DEV, "--part", "zero_shot")
    assert table.exit_code == 0 and "MAP" in table.output and "unseen" in table.output


def test_unseen_offset_option_moves_the_long_tail(model: Path, tmp_path: Path) -> None:
    from kgcode.coder import Coder

    coder = Coder.load(model)
    base = json.loads(run("eval", "--model", model, "--data", DEV, "--json").output)
    assert base["unseen_offset"] == coder.unseen_offset
    result = run("eval", "--model", model, "--data", DEV, "--json", "--unseen-offset", 10)
    assert result.exit_code == 0, result.output
    high = json.loads(result.output)
    assert high["unseen_offset"] == 10.0
    assert high["buckets"]["unseen"]["r@10"] >= base["buckets"]["unseen"]["r@10"]
    note = tmp_path / "note.txt"
    note.write_text("Type 2 diabetes mellitus without complications. Fracture of the femur.\n")

    def top(offset: float) -> list[str]:
        out = run("predict", "--model", model, note, "--top-k", 3, "--threshold", 0,
                  "--unseen-offset", offset)
        assert out.exit_code == 0, out.output
        return [c["code"] for c in json.loads(out.output)["codes"]]

    seen = {c for c, n in zip(coder.labels, coder.train_counts, strict=True) if n > 0}
    assert len(seen) >= 3
    assert not set(top(10)) & seen  # the top codes are all codes without training notes
    assert set(top(-10)) <= seen  # and all seen ones the other way
    for bad in ("nan", "11", "x"):
        out = CliRunner().invoke(group, ["predict", "--model", str(model), str(note), "--unseen-offset", bad])
        assert out.exit_code == 2 and "--unseen-offset" in out.output and "Traceback" not in out.output


def test_dtype_option(model: Path, tmp_path: Path) -> None:
    from kgcode.cli_coder import DTYPE_CHOICES
    from kgcode.coder import INFERENCE_DTYPES

    assert DTYPE_CHOICES == INFERENCE_DTYPES
    result = run("eval", "--model", model, "--data", DEV, "--json", "--dtype", "fp32")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["inference_dtype"] == "fp32"
    # the tiny coder's hashing encoder has no int8 version: one line, exit 2
    note = tmp_path / "note.txt"
    note.write_text("Type 2 diabetes mellitus.", encoding="utf-8")
    bad = CliRunner().invoke(group, ["predict", "--model", str(model), str(note), "--dtype", "int8"])
    assert bad.exit_code == 2
    assert "--dtype int8" in bad.output and "no int8 version" in bad.output and "Traceback" not in bad.output
    unknown = CliRunner().invoke(group, ["predict", "--model", str(model), str(note), "--dtype", "fp8"])
    assert unknown.exit_code == 2 and "fp8" in unknown.output


def test_backend_option(model: Path, tmp_path: Path) -> None:
    from kgcode.cli_coder import BACKEND_CHOICES
    from kgcode.coder import INFERENCE_BACKENDS

    assert BACKEND_CHOICES == INFERENCE_BACKENDS
    result = run("eval", "--model", model, "--data", DEV, "--json", "--backend", "torch", "--dtype", "fp32")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert (out["inference_backend"], out["inference_dtype"]) == ("torch", "fp32")
    note = tmp_path / "note.txt"
    note.write_text("Type 2 diabetes mellitus.", encoding="utf-8")
    # the tiny coder's hashing encoder has no ONNX version; bf16 never runs on onnx: one line, exit 2
    for flags, says in (
        (["--backend", "onnx"], "no ONNX Runtime version"),
        (["--backend", "onnx", "--dtype", "bf16"], "bf16 runs on the torch backend only"),
    ):
        bad = CliRunner().invoke(group, ["predict", "--model", str(model), str(note), *flags])
        assert bad.exit_code == 2, bad.output
        assert " ".join(flags[:2]) in bad.output and says in bad.output and "Traceback" not in bad.output
        assert len(bad.output.strip().splitlines()) == 1
    unknown = CliRunner().invoke(group, ["predict", "--model", str(model), str(note), "--backend", "tvm"])
    assert unknown.exit_code == 2 and "tvm" in unknown.output
    # a model saved with a backend this machine (or its encoder) cannot run: one line before any note
    onnx_model = tmp_path / "onnx-model"
    shutil.copytree(model, onnx_model)
    config = json.loads((onnx_model / "config.json").read_text())
    config["coder"]["inference_backend"] = "onnx"
    (onnx_model / "config.json").write_text(json.dumps(config))
    saved = CliRunner().invoke(group, ["predict", "--model", str(onnx_model), str(note)])
    assert saved.exit_code == 2 and "Traceback" not in saved.output
    assert "inference_backend 'onnx'" in saved.output and "no ONNX Runtime version" in saved.output
    fixed = CliRunner().invoke(group, ["predict", "--model", str(onnx_model), "--backend=torch", str(note)])
    assert fixed.exit_code == 0, fixed.output


def test_eval_maps_pubtator_mesh_ids_to_icd10cm_through_the_kg(model: Path, tmp_path: Path) -> None:
    pubtator = Path(__file__).resolve().parents[1] / "fixtures" / "ncbi_mini.txt"
    result = run("eval", "--model", model, "--data", pubtator, "--kg", model.parent / "kg", "--json")
    assert result.exit_code == 0, result.output
    m = json.loads(result.output)
    assert m["data"]["notes"] == 2 and m["data"]["silver_icd10cm"] == {"ids_mapped": 2, "ids_unmapped": 2}
    result = run("eval", "--model", model, "--data", pubtator, "--kg", tmp_path / "nokg")
    assert result.exit_code == 2 and "needs a KG" in result.output


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_model_folder_errors_are_one_line(model: Path, tmp_path: Path, command: str) -> None:
    broken = Path(shutil.copytree(model, tmp_path / "broken"))
    (broken / "label_index.json").unlink()
    old = Path(shutil.copytree(model, tmp_path / "old"))
    cfg = json.loads((old / "config.json").read_text())
    cfg["format_version"] = 0
    (old / "config.json").write_text(json.dumps(cfg))
    extra = ["--data", str(DEV)] if command == "eval" else []
    for folder, message in ((broken, "label_index.json: missing file"), (old, "format version 0")):
        result = CliRunner().invoke(group, [command, "--model", str(folder), *extra], input="A note.")
        assert result.exit_code == 2
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
