"""ONNX Runtime inference for Hugging Face encoders: exported once, fused, optionally int8, cached.

The torch encoder stays the reference (training, the embedding cache). For inference a copy of the
same weights can run in ONNX Runtime instead (:meth:`text_encoder.hf.HFTextEncoder.onnx_runtime`):

1. :func:`export_onnx` exports the transformer (``input_ids``, ``attention_mask`` ->
   ``last_hidden_state``) with ``torch.onnx.export``, fuses attention, layer norms and GELU with
   ONNX Runtime's transformer optimizer (BERT-like models), checks the fused graph against torch
   on a probe batch, and for int8 quantizes every matrix product dynamically (int8 weights, one
   scale per output channel; activations quantized per batch).
2. The files go to a folder keyed by the encoder's :meth:`~text_encoder.base.TextEncoder.fingerprint`
   and the torch / onnx / onnxruntime versions, written to a temporary folder first and renamed
   into place, so a half-written export is never read. Later runs only open the session.
3. :class:`OnnxEncoderModel` wraps the session as a module that answers like a transformers model
   (``.last_hidden_state``), so pooling and batching are the torch encoder's own.

On a 2-core AMD EPYC (AVX2, no VNNI) MiniLM's CodiEsp sentences ran about 1.2x faster in ONNX
Runtime int8 than in torch's dynamic int8, with vectors closer to fp32 (mean cosine 0.991 against
0.975); the fused fp32 graph gives fp32's vectors (cosine 1.0000) about 1.1x faster
(``bench/results/coder.json``).

``onnxruntime`` and ``onnx`` are optional (``pip install 'kgcode[onnx]'``); nothing here imports
them until an export or a session is needed.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import io
import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

__all__ = [
    "OnnxEncoderModel",
    "OnnxMatMul",
    "export_onnx",
    "onnx_available",
    "onnx_cache_folder",
    "require_onnx",
]

logger = logging.getLogger(__name__)

#: transformers ``model_type`` values that ONNX Runtime's "bert" fusions know.
FUSABLE_MODEL_TYPES: frozenset[str] = frozenset({"bert", "roberta", "xlm-roberta", "camembert"})

#: Largest absolute difference allowed between the exported fp32 graph and torch on the probe.
EXPORT_TOLERANCE = 1e-3

_FILES = {False: "model.onnx", True: "model.int8.onnx"}


def onnx_available() -> bool:
    """Whether ``onnxruntime`` and ``onnx`` are installed (``pip install 'kgcode[onnx]'``)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))


def require_onnx() -> None:
    """Raise the one-line ``ValueError`` that says how to install the backend, if it is missing."""
    if not onnx_available():
        raise ValueError(
            "the onnx inference backend needs onnxruntime and onnx: pip install 'kgcode[onnx]' "
            "(or use the torch backend)"
        )


def onnx_cache_folder(cache_dir: str | os.PathLike[str], fingerprint: dict[str, Any]) -> Path:
    """The folder that holds the export of an encoder with this fingerprint.

    Args:
        cache_dir: the cache root (kgcode uses ``$KGCODE_HOME/onnx``).
        fingerprint: the encoder's :meth:`~text_encoder.base.TextEncoder.fingerprint`.

    Returns:
        ``cache_dir/<hash>``, keyed by the fingerprint and the torch, onnx and onnxruntime versions.
    """
    versions = {"torch": torch.__version__}
    for name in ("onnx", "onnxruntime"):
        with contextlib.suppress(ImportError):
            versions[name] = __import__(name).__version__
    key = json.dumps({"encoder": fingerprint, "versions": versions}, sort_keys=True, default=str)
    return Path(cache_dir) / hashlib.sha256(key.encode()).hexdigest()[:24]


class _LastHidden(nn.Module):
    """``(input_ids, attention_mask) -> last_hidden_state``: the graph that is exported."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _eager_copy(model: nn.Module) -> nn.Module:
    """A CPU copy with plain ("eager") attention: the pattern ONNX Runtime's fusions recognise."""
    twin = copy.deepcopy(model).cpu().eval()
    setter = getattr(twin, "set_attn_implementation", None)
    try:
        if callable(setter):
            setter("eager")
        else:
            twin.config._attn_implementation = "eager"
    except (ValueError, AttributeError):
        logger.debug("could not switch %s to eager attention; exporting as is", type(model).__name__)
    return twin


def export_onnx(
    model: nn.Module,
    cache_dir: str | os.PathLike[str],
    fingerprint: dict[str, Any],
    *,
    int8: bool,
    probe: tuple[torch.Tensor, torch.Tensor],
) -> Path:
    """Export, fuse and (for int8) quantize a transformers encoder, or reuse an earlier export.

    Args:
        model: a transformers encoder (``model(input_ids=..., attention_mask=...)`` returns an
            object with ``last_hidden_state``); it is copied, never changed.
        cache_dir: the cache root.
        fingerprint: the encoder's fingerprint (the cache key, see :func:`onnx_cache_folder`).
        int8: also write the dynamically quantized graph and return it.
        probe: ``(input_ids, attention_mask)`` of a small tokenised batch: traced, and used to check
            the exported graph against torch.

    Returns:
        The ``.onnx`` file to open: ``model.onnx`` (fp32, fused) or ``model.int8.onnx``.

    Raises:
        ValueError: onnxruntime/onnx are missing, or the exported graph disagrees with torch.

    Shapes:
        probe: ``(b, t)`` each.
    """
    require_onnx()
    folder = onnx_cache_folder(cache_dir, fingerprint)
    target = folder / _FILES[int8]
    if target.is_file():
        return target
    tmp: Path | None = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
        if (folder / _FILES[False]).is_file():
            shutil.copy2(folder / _FILES[False], tmp / _FILES[False])
        else:
            _export_fp32(model, tmp / _FILES[False], probe)
        if int8:
            _quantize(tmp / _FILES[False], tmp / _FILES[True])
        (tmp / "fingerprint.json").write_text(json.dumps(fingerprint, indent=1, default=str) + "\n")
        if not folder.exists():
            with contextlib.suppress(OSError):  # another process may have got there first
                os.replace(tmp, folder)
        if tmp.exists():  # the folder was there (an fp32-only export): add what it lacks
            for name in (_FILES[False], _FILES[True]) if int8 else (_FILES[False],):
                if not (folder / name).is_file():
                    os.replace(tmp / name, folder / name)
    except ValueError:
        raise
    except OSError as err:
        raise ValueError(
            f"cannot write the ONNX export under {str(folder.parent)!r} ({err.strerror or err}): expected a "
            "writable folder (set KGCODE_HOME), or use the torch backend"
        ) from err
    except Exception as err:  # noqa: BLE001  (the exporter and the optimizer raise many kinds)
        first = str(err).splitlines()[0] if str(err) else ""
        raise ValueError(
            f"could not export the text encoder to ONNX ({type(err).__name__}: {first}): "
            "use the torch backend for this model"
        ) from err
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("exported the text encoder to ONNX (%s) in %s", "int8" if int8 else "fp32", folder)
    return target


def _export_fp32(model: nn.Module, path: Path, probe: tuple[torch.Tensor, torch.Tensor]) -> None:
    import numpy as np
    import onnxruntime as ort

    wrapper = _LastHidden(_eager_copy(model))
    ids, mask = (t.detach().cpu().long() for t in probe)
    raw = path.with_name("raw.onnx")
    axes = {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"}}
    with torch.no_grad():  # before the export, which leaves the traced copy unfit to run again
        expected = wrapper(ids, mask).numpy()
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # tracer and deprecation notes about the TorchScript exporter
        # traced without padding: a padded example makes the tracer keep a mask path that is only
        # right for that example's shape; the padded probe then checks the result
        torch.onnx.export(
            wrapper,
            (ids, torch.ones_like(mask)),
            str(raw),
            input_names=["input_ids", "attention_mask"],
            output_names=["last_hidden_state"],
            dynamic_axes={**axes, "last_hidden_state": {0: "batch", 1: "tokens"}},
            opset_version=17,
            dynamo=False,
        )
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", "")
    if model_type in FUSABLE_MODEL_TYPES:
        from onnxruntime.transformers import optimizer

        with contextlib.redirect_stdout(io.StringIO()):
            fused = optimizer.optimize_model(
                str(raw),
                model_type="bert",
                num_heads=int(getattr(config, "num_attention_heads", 0)),
                hidden_size=int(getattr(config, "hidden_size", 0)),
            )
        fused.save_model_to_file(str(path))
        raw.unlink()
    else:
        os.replace(raw, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
    valid = mask.numpy().astype(bool)
    gap = float(np.abs(got - expected)[valid].max()) if valid.any() else 0.0
    if not gap <= EXPORT_TOLERANCE:
        raise ValueError(
            f"the ONNX export of the text encoder differs from torch by {gap:.2e} on a probe batch "
            f"(expected at most {EXPORT_TOLERANCE:.0e}): use the torch backend for this model"
        )


def _quantize(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def advice(record: logging.LogRecord) -> bool:  # a hint about static quantization, not ours
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(advice)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(src),
                str(dst),
                per_channel=True,
                weight_type=QuantType.QInt8,
                # the fused operators are not in ONNX's type inference; their outputs are float32
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
    finally:
        root.removeFilter(advice)


def _session_options(num_threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(num_threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    # threads spin inside a run (fast hand-offs between operators) and stop at its end, so they
    # do not busy-wait while torch scores the notes on the same cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.add_session_config_entry("session.force_spinning_stop", "1")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


class OnnxMatMul(nn.Module):
    """``x -> x @ weight.T`` in ONNX Runtime, in float32 (the weight is copied into the session).

    For the coder's zero-shot product of sentence vectors with every code text: on a 2-core AMD
    EPYC (AVX2), 300 sentences against 98,186 code vectors took 126 ms here against 245-355 ms
    with torch's fp32 product and 179 ms with torch's int8 one, with exact fp32 results.

    Args:
        weight: the matrix (rows are the outputs).
        num_threads: intra-op threads (default: torch's).

    Shapes:
        weight: ``(n, d)``; input: ``(m, d)``; output: ``(m, n)``.
    """

    def __init__(self, weight: torch.Tensor, num_threads: int | None = None) -> None:
        super().__init__()
        require_onnx()
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper

        n_out, n_in = weight.shape
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["y"])],
            "matmul",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["m", n_in])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["m", n_out])],
            [numpy_helper.from_array(weight.detach().float().cpu().T.contiguous().numpy(), "w")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = min(model.ir_version, 9)  # readable by older onnxruntime releases too
        serialized = model.SerializeToString()
        del graph, model  # each held a copy of the weight: free them before the session makes its own
        self.shape = (n_out, n_in)
        options = _session_options(num_threads)
        # the output (sentences x codes) is one large buffer whose size changes with every batch:
        # an arena would keep the largest one for the life of the session
        options.enable_cpu_mem_arena = False
        self.session = ort.InferenceSession(serialized, options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Multiply.

        Shapes:
            x: ``(m, d)``; output: ``(m, n)`` float32.
        """
        (y,) = self.session.run(["y"], {"x": x.detach().float().cpu().contiguous().numpy()})
        return torch.from_numpy(y)

    def extra_repr(self) -> str:
        return f"out={self.shape[0]}, in={self.shape[1]}"


class OnnxEncoderModel(nn.Module):
    """An ONNX Runtime session that answers like a transformers encoder.

    Args:
        path: the ``.onnx`` file (inputs ``input_ids`` and ``attention_mask``, output
            ``last_hidden_state``).
        num_threads: intra-op threads (default: torch's).

    The module has no parameters; ``forward`` takes and returns CPU tensors.
    """

    def __init__(self, path: str | os.PathLike[str], num_threads: int | None = None) -> None:
        super().__init__()
        require_onnx()
        import onnxruntime as ort

        self.path = str(path)
        try:
            self.session = ort.InferenceSession(
                self.path, _session_options(num_threads), providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # noqa: BLE001  (onnxruntime's own error types)
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise ValueError(
                f"cannot open the ONNX export {self.path!r} ({first}): delete its folder to export "
                "again, or use the torch backend"
            ) from err

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        """Run the graph.

        Args:
            input_ids: token ids.
            attention_mask: 1 for real tokens, 0 for padding.

        Returns:
            An object with ``last_hidden_state`` (float32 CPU tensor).

        Shapes:
            input_ids, attention_mask: ``(b, t)``; last_hidden_state: ``(b, t, dim)``.
        """
        feeds = {
            "input_ids": input_ids.detach().cpu().long().numpy(),
            "attention_mask": attention_mask.detach().cpu().long().numpy(),
        }
        (states,) = self.session.run(["last_hidden_state"], feeds)
        return SimpleNamespace(last_hidden_state=torch.from_numpy(states))

    def extra_repr(self) -> str:
        return f"path={self.path!r}"
