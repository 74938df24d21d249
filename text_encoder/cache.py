"""On-disk cache of code-text embeddings (titles, synonyms) keyed by encoder, ontology and texts.

Embedding every ICD-10-CM title (98,505 texts in simple-icd-10-cm, chapters and blocks included) with
all-MiniLM-L6-v2 takes minutes on 2 CPU cores: measured 120-205 titles/s across runs on a shared
2-core AMD EPYC (batch 128, fp32 and bf16 autocast alike within the noise), i.e. 8 to 14 minutes. So it
must happen once per (encoder, ontology release, texts); afterwards the matrix (98,505 x 384 float32,
~150 MB) is written in under a second and read back in a few hundredths of a second.

A cache entry is two files in ``cache_dir``:

* ``emb-<key>.safetensors`` — one float32 tensor ``embeddings`` of shape ``(n, dim)``;
* ``emb-<key>.json`` — the sidecar: format version, ``key``, ``key_parts``, the encoder fingerprint,
  ``ids`` (row ``i`` is ``ids[i]``), ``n``, ``dim``, ``texts_sha256`` and ``created`` (UTC, ISO 8601).

The key is the SHA-256 of the encoder's :meth:`~text_encoder.base.TextEncoder.fingerprint` (for
:class:`~text_encoder.hf.HFTextEncoder`: options, model folder name, hash of ``config.json``, weight
files' sizes and modification times, and a hash of the in-memory weights once it has been trained),
the caller's ``key_parts`` (e.g. ``{"ontology": "ICD10CM", "version": "2026"}``) and a hash of the
texts. Both files are written to a temporary file and moved into place with :func:`os.replace`, the
tensors first, so a crash leaves either the previous entry or none; an entry whose sidecar is missing,
unreadable, or lists other ids is recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from text_encoder.base import TextEncoder

__all__ = ["FORMAT_VERSION", "EmbeddingCache"]

logger = logging.getLogger(__name__)

#: Version of the on-disk layout; a different version is recomputed.
FORMAT_VERSION = 1


def _sha256_texts(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def _atomic_write(path: Path, write: Any) -> None:
    """Call ``write(tmp_path)`` then move the temporary file onto ``path``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class EmbeddingCache:
    """A folder of cached embedding matrices.

    Args:
        cache_dir: the folder (created when missing).

    Example:
        >>> cache = EmbeddingCache("~/.cache/kgcode/embeddings")  # doctest: +SKIP
        >>> vecs = cache.get_or_compute(
        ...     {"ontology": "ICD10CM", "version": "2026"}, ids, titles, encoder)  # doctest: +SKIP
    """

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.cache_dir = Path(cache_dir).expanduser()

    def key(self, key_parts: Mapping[str, Any], texts: Sequence[str], encoder: TextEncoder) -> str:
        """The cache key for these texts under this encoder.

        Args:
            key_parts: JSON-serialisable facts the caller wants in the key (ontology, version...).
            texts: the texts, in order.
            encoder: the encoder that would embed them.

        Returns:
            A 64-character hex digest.
        """
        payload = {
            "format": FORMAT_VERSION,
            "encoder": encoder.fingerprint(),
            "key_parts": dict(key_parts),
            "texts_sha256": _sha256_texts(texts),
        }
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def paths(self, key: str) -> tuple[Path, Path]:
        """``(tensor file, sidecar)`` of an entry."""
        stem = f"emb-{key[:32]}"
        return self.cache_dir / f"{stem}.safetensors", self.cache_dir / f"{stem}.json"

    def load(self, key: str, ids: Sequence[str]) -> torch.Tensor | None:
        """Read an entry; ``None`` when it is absent, unreadable or lists other ids.

        Args:
            key: from :meth:`key`.
            ids: the ids the rows must carry, in order.

        Returns:
            The float32 matrix on CPU, or ``None``.

        Shapes:
            output: ``(len(ids), dim)``.
        """
        tensor_path, sidecar_path = self.paths(key)
        if not (tensor_path.is_file() and sidecar_path.is_file()):
            return None
        try:
            meta = json.loads(sidecar_path.read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT_VERSION or meta.get("key") != key:
                logger.info("embedding cache %s: stale sidecar, recomputing", sidecar_path.name)
                return None
            if meta.get("ids") != list(ids):
                logger.info("embedding cache %s: ids differ, recomputing", sidecar_path.name)
                return None
            tensor = load_file(str(tensor_path))["embeddings"]
        except (OSError, ValueError, KeyError, SafetensorError) as err:
            logger.warning("embedding cache %s unreadable (%s), recomputing", tensor_path.name, err)
            return None
        if tuple(tensor.shape) != (len(ids), meta.get("dim")):
            shape = tuple(tensor.shape)
            logger.warning("embedding cache %s has shape %s, recomputing", tensor_path.name, shape)
            return None
        return tensor

    def save(
        self,
        key: str,
        ids: Sequence[str],
        embeddings: torch.Tensor,
        *,
        key_parts: Mapping[str, Any] | None = None,
        encoder: TextEncoder | None = None,
        texts: Sequence[str] | None = None,
    ) -> Path:
        """Write an entry atomically (tensors first, then the sidecar).

        Args:
            key: from :meth:`key`.
            ids: row ids.
            embeddings: the matrix.
            key_parts: recorded in the sidecar.
            encoder: its fingerprint is recorded in the sidecar.
            texts: their hash is recorded in the sidecar.

        Returns:
            The tensor file's path.

        Shapes:
            embeddings: ``(len(ids), dim)``.
        """
        if embeddings.ndim != 2 or embeddings.shape[0] != len(ids):
            raise ValueError(f"embeddings of shape {tuple(embeddings.shape)} for {len(ids)} ids")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tensor_path, sidecar_path = self.paths(key)
        tensor = embeddings.detach().to("cpu", torch.float32).contiguous()
        header = {"key": key, "format": str(FORMAT_VERSION)}
        _atomic_write(tensor_path, lambda tmp: save_file({"embeddings": tensor}, tmp, metadata=header))
        meta = {
            "format": FORMAT_VERSION,
            "key": key,
            "key_parts": dict(key_parts or {}),
            "encoder": encoder.fingerprint() if encoder is not None else None,
            "n": int(tensor.shape[0]),
            "dim": int(tensor.shape[1]),
            "texts_sha256": _sha256_texts(texts) if texts is not None else None,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "ids": list(ids),
        }
        text = json.dumps(meta, indent=1, default=str)
        _atomic_write(sidecar_path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
        return tensor_path

    def get_or_compute(
        self,
        key_parts: Mapping[str, Any],
        ids: Sequence[str],
        texts: Sequence[str],
        encoder: TextEncoder,
        *,
        batch_size: int | None = 128,
        show_progress_bar: bool | None = None,
    ) -> torch.Tensor:
        """Return the cached embeddings of ``texts``, computing and storing them on a miss.

        Args:
            key_parts: JSON-serialisable facts that must match, at least the ontology version string
                (e.g. ``{"ontology": "ICD10CM", "version": "2026"}``).
            ids: one id per text (row ``i`` of the result is ``ids[i]``).
            texts: the texts to embed.
            encoder: the encoder (a frozen one: see :meth:`TextEncoder.fingerprint`).
            batch_size: passed to :meth:`TextEncoder.encode` on a miss (128 suits short code titles:
                ~1.5x the throughput of 32 on 2 cores).
            show_progress_bar: passed to :meth:`TextEncoder.encode` on a miss.

        Returns:
            Float32 embeddings on CPU.

        Shapes:
            output: ``(len(ids), encoder.dim)``.
        """
        if len(ids) != len(texts):
            raise ValueError(f"{len(ids)} ids but {len(texts)} texts: expected one id per text")
        key = self.key(key_parts, texts, encoder)
        cached = self.load(key, ids)
        if cached is not None:
            logger.info("embedding cache hit: %d vectors from %s", len(ids), self.paths(key)[0].name)
            return cached
        logger.info(
            "embedding %d texts with %s (cache miss; this runs once per encoder and ontology release)",
            len(texts),
            encoder.name,
        )
        vectors = encoder.encode(list(texts), batch_size=batch_size, show_progress_bar=show_progress_bar)
        vectors = vectors.detach().to("cpu", torch.float32)
        path = self.save(key, ids, vectors, key_parts=key_parts, encoder=encoder, texts=texts)
        logger.info("embedding cache written: %s", path)
        return vectors
