"""Probe: how well each signal ranks the codes without training notes (``results/unseen_signals.json``).

For every unseen gold mention of CodiEsp dev, its rank among the labels without training notes
under: the benchmarked coder's final score, the sentence / code-text cosine (the zero-shot
path), the dictionary coverage, and two sub-sentence variants of the cosine that the package does
not use (chunks cut at commas, brackets and a few connectives, each encoded on its own, or pooled
from the sentence's own token states), and two other code sides for the cosine: each code's title
alone, and each of its names (title, inclusion terms, DO / Mondo synonyms) embedded on its own,
the best name counting (the package's code text joins them, with the parents' titles, into one).
The shares of mentions within the top k tell how far a better zero-shot signal could move unseen
R@10 (the coder's target is 0.30). A probe for design decisions, run on dev only; needs
``bench/bench_coder.py``'s ``full`` model and KG.

Run: ``.venv/bin/python bench/bench_unseen_signals.py [--model DIR] [--kg DIR]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from results_io import write_result

logger = logging.getLogger("bench.unseen_signals")
ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("KGCODE_DATA_DIR", ROOT.parent / "shared" / "data")) / "codiesp"
KS = (1, 3, 5, 10, 20, 50, 100, 500)

#: where a sentence is cut into chunks (a mention rarely spans these)
CUT = re.compile(
    r"\s*(?:[,;:()\[\]]|\band\b|\bwith\b|\bor\b|\bwithout\b|\bdue to\b|\bsecondary to\b)\s*", re.I
)


def chunk_spans(sentence: str) -> list[tuple[int, int]]:
    """Character spans of a sentence's chunks (none when it does not split)."""
    spans, pos = [], 0
    for m in CUT.finditer(sentence):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(sentence)))
    out = []
    for a, b in spans:
        piece = sentence[a:b]
        lead = len(piece) - len(piece.lstrip(" ."))
        end = len(piece.rstrip(" ."))
        if end > lead and re.search("[a-zA-Z]{3}", piece):
            out.append((a + lead, a + end))
    return out if len(out) > 1 else []


def pooled_chunks(encoder: Any, sentences: list[str], batch: int = 64) -> torch.Tensor:
    """Chunk vectors mean-pooled from each sentence's token states (one encoder pass).

    Shapes:
        output: ``(num_chunks, dim)``, L2-normalised.
    """
    out = []
    for i in range(0, len(sentences), batch):
        part = sentences[i : i + batch]
        tok = encoder.tokenizer(
            part,
            padding=True,
            truncation=True,
            max_length=encoder.max_length,
            return_tensors="pt",
            return_offsets_mapping=True,
        )
        offsets = tok.pop("offset_mapping")
        with torch.inference_mode():
            states = encoder.model(**tok).last_hidden_state.float()
        for j, sentence in enumerate(part):
            for a, b in chunk_spans(sentence):
                off = offsets[j]
                m = (off[:, 0] >= a) & (off[:, 1] <= b) & (off[:, 1] > off[:, 0])
                if m.any():
                    out.append(F.normalize(states[j][m].mean(0), dim=-1))
    return torch.stack(out) if out else torch.empty(0, encoder.dim)


def names_each(kg: Any, coder: Any, cache_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Every name of every label (title, inclusion terms, synonyms) embedded on its own (cached):
    :func:`kgcode.coder.code_name_vectors`, the code side of ``zero_shot_names``.

    Shapes:
        output: ``(n_names, dim)`` L2-normalised vectors and ``(n_names,)`` their label rows.
    """
    from kgcode.coder import code_name_vectors

    return code_name_vectors(kg, coder.labels, coder.encoder, cache_dir)


def best_name(sentences: torch.Tensor, vectors: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """Each label's best cosine between a note's sentences and one of its names (-1: no sentence).

    Shapes:
        sentences: ``(s, dim)``; vectors: ``(n_names, dim)`` normalised; owner: ``(n_names,)``;
        output: ``(n,)``.
    """
    out = torch.full((n,), -1.0)
    if not len(sentences):
        return out
    per_name = (F.normalize(sentences.float(), dim=-1) @ vectors.T).amax(0)
    return out.scatter_reduce(0, owner, per_name, "amax")


def main() -> int:
    """Rank the unseen gold mentions of dev under each signal; write the JSON."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / ".cache" / "bench-models" / "full")
    ap.add_argument("--kg", type=Path, default=ROOT / ".cache" / "bench-models" / "kg")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "unseen_signals.json")
    args = ap.parse_args()
    if not (args.model / "config.json").is_file() or not (DATA / "dev").is_dir() or not args.kg.is_dir():
        logger.warning("no coder at %s, KG at %s or CodiEsp dev in %s: skipping", args.model, args.kg, DATA)
        return 0
    from kg import load_kg
    from kgcode import paths
    from kgcode.coder import Coder, code_text_vectors
    from kgcode.datasets import read_dataset
    from kgcode.training import encode_notes, prepare_notes, score_encoded

    coder = Coder.load(args.model)
    notes, _ = prepare_notes(read_dataset(DATA / "dev")[0], coder.label_row)
    enc = encode_notes(coder, notes, cache_dir=paths.cache_dir() / "embeddings", show_progress_bar=False)
    final = score_encoded(coder, enc)
    coverage, _ = coder.lexical_match(enc.segments)
    unseen = coder.unseen_mask
    bank = coder.bank["zs"].float()
    kg = load_kg(args.kg)
    cache = paths.cache_dir() / "embeddings"
    titles = F.normalize(code_text_vectors(kg, coder.labels, coder.encoder, cache, titles_only=True), dim=-1)
    name_vectors, name_owner = names_each(kg, coder, cache)

    def cosine(vectors: torch.Tensor, codes: torch.Tensor | None = None) -> torch.Tensor:
        if not len(vectors):
            return torch.full((len(coder.labels),), -1.0)
        return (F.normalize(vectors.float(), dim=-1) @ (bank if codes is None else codes).T).amax(0)

    ranks: dict[str, list[int]] = {
        k: []
        for k in (
            "final",
            "sentence",
            "dictionary",
            "chunks_encoded",
            "chunks_pooled",
            "sentence_or_chunks_encoded",
            "sentence_titles",
            "sentence_names_each",
        )
    }
    # the zero-shot baseline of the issue: unseen gold mentions in the top 10 of *all* codes
    top10_all: dict[str, list[bool]] = {k: [] for k in ("sentence", "sentence_titles", "sentence_names_each")}
    n_chunks, t_encoded, t_pooled = 0, 0.0, 0.0
    for i, seg in enumerate(enc.segments):
        gold = [g for g in enc.gold[i] if unseen[g]]
        pieces = sorted({s[a:b] for s in seg.texts for a, b in chunk_spans(s)} - set(seg.texts))
        n_chunks += len(pieces)
        t = time.perf_counter()
        with torch.inference_mode():
            encoded = coder.encoder.encode(pieces) if pieces else torch.empty(0, bank.shape[1])
        t_encoded += time.perf_counter() - t
        t = time.perf_counter()
        pooled = pooled_chunks(coder.encoder, list(seg.texts))
        t_pooled += time.perf_counter() - t
        sentence = cosine(seg.vectors)
        signals = {
            "final": final[i],
            "sentence": sentence,
            "dictionary": coverage[i] + 0.01 * sentence,  # as the reranker picks its candidates
            "chunks_encoded": cosine(encoded),
            "chunks_pooled": cosine(pooled),
            "sentence_or_chunks_encoded": torch.maximum(sentence, cosine(encoded)),
            "sentence_titles": cosine(seg.vectors, titles),
            "sentence_names_each": best_name(seg.vectors, name_vectors, name_owner, len(coder.labels)),
        }
        for name in top10_all:
            score = signals[name]
            top10_all[name] += [int((score > score[g]).sum()) < 10 for g in gold]
        for name, score in signals.items():
            among = score.masked_fill(~unseen, -1e9)
            ranks[name] += [int((among > among[g]).sum()) for g in gold]
    result = {
        "model": str(args.model),
        "mentions": len(ranks["final"]),
        "unseen_labels": int(unseen.sum()),
        "sentences_per_note": round(float(np.mean([len(s.texts) for s in enc.segments])), 1),
        "chunks_per_note": round(n_chunks / len(enc.segments), 1),
        "seconds_chunks_encoded": round(t_encoded, 1),
        "seconds_chunks_pooled": round(t_pooled, 1),
        "code_names": int(len(name_owner)),
        "unseen_r@10_among_all_codes": {name: round(float(np.mean(v)), 4) for name, v in top10_all.items()},
        "share_in_top_k_among_unseen": {
            name: {str(k): round(float((np.array(r) < k).mean()), 4) for k in KS} for name, r in ranks.items()
        },
    }
    for name, shares in result["share_in_top_k_among_unseen"].items():
        logger.info("%-28s top 10 %.3f  top 50 %.3f", name, shares["10"], shares["50"])
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
