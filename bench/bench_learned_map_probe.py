"""Probe: can a map learned on the training notes rank codes without training notes better?

The zero-shot maximum (each code's best cosine between a note's sentences and one of its names)
is what ranks the codes that CodiEsp train never shows. This probe learns one shared linear map
``W = I + A B`` (low rank, starting at the identity) of the frozen MiniLM vectors, applied to the
sentences and to the names alike, from the training notes' gold codes: for each training note, a
softmax over its gold codes and the 150 codes the plain cosine ranks highest (hard negatives),
with an L2 pull of ``A B`` towards 0 of weight ``lam``. It then ranks dev's unseen gold mentions
among all codes and among the 96,419 codes without training notes, against the identity map.
Nothing in the package uses such a map; the probe tells whether building one is worth it (the
coder issue's note: a supervised variant drove unseen R@10 to 0.00 within one epoch).

Needs ``bench/bench_coder.py``'s ``full`` model (its code-name vectors and its label set).

Run: ``.venv/bin/python bench/bench_learned_map_probe.py [--model DIR] [--settings 1.0,0.03,0.001]``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from results_io import write_result

logger = logging.getLogger("bench.learned_map_probe")
ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("KGCODE_DATA_DIR", ROOT.parent / "shared" / "data")) / "codiesp"
HARD_NEGATIVES = 150
KS = (10, 50, 100)


def best_name(sentences: torch.Tensor, names: torch.Tensor, owner: torch.Tensor, n: int) -> torch.Tensor:
    """Each of ``n`` labels' best cosine between a sentence and one of its names (-1: no name).

    Shapes:
        sentences: ``(s, dim)`` normalised; names: ``(m, dim)`` normalised; owner: ``(m,)``;
        output: ``(n,)``.
    """
    per_name = (sentences @ names.T).amax(0)
    return torch.full((n,), -1.0).scatter_reduce(0, owner, per_name, "amax", include_self=False)


def evaluate(
    w: torch.Tensor,
    segments: list[Any],
    gold: list[list[int]],
    names: torch.Tensor,
    owner: torch.Tensor,
    unseen: torch.Tensor,
) -> dict[str, float]:
    """Unseen gold mentions of dev under the map ``w``: R@10 among all codes, shares in the top k
    among the unseen codes."""
    n = len(unseen)
    mapped = F.normalize(names @ w, dim=-1)
    top10_all, among = [], []
    with torch.no_grad():
        for seg, rows in zip(segments, gold, strict=True):
            if not len(seg.vectors):
                continue
            score = best_name(F.normalize(seg.vectors.float() @ w, dim=-1), mapped, owner, n)
            hidden = score.masked_fill(~unseen, -1e9)
            for r in rows:
                if unseen[r]:
                    top10_all.append(int((score > score[r]).sum()) < 10)
                    among.append(int((hidden > hidden[r]).sum()))
    ranks = np.array(among)
    out = {"unseen_r@10_among_all_codes": round(float(np.mean(top10_all)), 4), "mentions": len(ranks)}
    out.update({f"share_top_{k}_among_unseen": round(float((ranks < k).mean()), 4) for k in KS})
    return out


def main() -> int:
    """Train the map under each regularisation weight and write ``results/learned_map_probe.json``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=ROOT / ".cache" / "bench-models" / "full")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "learned_map_probe.json")
    ap.add_argument("--settings", default="1.0,0.03,0.001", help="Comma-separated L2 weights lam.")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not (args.model / "config.json").is_file() or not (DATA / "train").is_dir():
        logger.warning("no coder at %s or CodiEsp in %s: skipping", args.model, DATA)
        return 0
    from kgcode import paths
    from kgcode.coder import Coder
    from kgcode.datasets import read_dataset
    from kgcode.training import encode_notes, prepare_notes

    coder = Coder.load(args.model)
    if "names" not in coder.bank:
        raise SystemExit(f"{args.model}: the coder has no code-name vectors (zero_shot_names off)")
    cache = paths.cache_dir() / "embeddings"
    encoded = {}
    for split in ("train", "dev"):
        notes, _ = prepare_notes(read_dataset(DATA / split)[0], coder.label_row)
        encoded[split] = encode_notes(coder, notes, cache_dir=cache, show_progress_bar=False)
    names = F.normalize(coder.bank["names"].float(), dim=-1)
    owner = coder.bank["name_owner"].long()
    unseen, n = coder.unseen_mask, len(coder.labels)
    eye = torch.eye(names.shape[1])
    dev = encoded["dev"]
    result: dict[str, Any] = {
        "model": str(args.model),
        "hard_negatives": HARD_NEGATIVES,
        "rank": args.rank,
        "epochs": args.epochs,
        "lr": args.lr,
        "identity": evaluate(eye, dev.segments, dev.gold, names, owner, unseen),
        "learned": {},
    }
    logger.info("identity: %s", result["identity"])
    # each training note's candidates (gold + hard negatives) and their names, as flat index lists
    order = torch.argsort(owner, stable=True)
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(owner, minlength=n).cumsum(0)])
    batches = []
    with torch.no_grad():
        for seg, rows in zip(encoded["train"].segments, encoded["train"].gold, strict=True):
            if not len(seg.vectors) or not rows:
                continue
            sent = seg.vectors.float()
            top = best_name(F.normalize(sent, dim=-1), names, owner, n).topk(HARD_NEGATIVES).indices
            cands = list(dict.fromkeys([*rows, *top.tolist()]))
            is_gold = torch.tensor([c in set(rows) for c in cands])
            idx, own = [], []
            for k, c in enumerate(cands):
                a, b = int(ptr[c]), int(ptr[c + 1])
                idx += order[a:b].tolist()
                own += [k] * (b - a)
            batches.append((sent, is_gold, torch.tensor(idx), torch.tensor(own)))
    for lam in (float(x) for x in args.settings.split(",")):
        torch.manual_seed(args.seed)
        a = torch.zeros(names.shape[1], args.rank, requires_grad=True)
        b = (0.01 * torch.randn(args.rank, names.shape[1])).requires_grad_(True)
        log_tau = torch.tensor(math.log(0.05), requires_grad=True)
        opt = torch.optim.Adam([a, b, log_tau], lr=args.lr)
        epochs = []
        t0 = time.perf_counter()
        for epoch in range(args.epochs):
            total = 0.0
            for i in torch.randperm(len(batches)).tolist():
                sent, is_gold, idx, own = batches[i]
                w = eye + a @ b
                per_name = (F.normalize(sent @ w, dim=-1) @ F.normalize(names[idx] @ w, dim=-1).T).amax(0)
                score = torch.full((len(is_gold),), -1.0).scatter_reduce(
                    0, own, per_name, "amax", include_self=False
                )
                logit = score / log_tau.exp()
                pos, neg = logit[is_gold], logit[~is_gold]
                both = torch.cat([pos[:, None], neg[None].expand(len(pos), -1)], dim=1)
                loss = (torch.logsumexp(both, dim=1) - pos).mean() + lam * (a @ b).pow(2).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss.detach())
            m = evaluate((eye + a @ b).detach(), dev.segments, dev.gold, names, owner, unseen)
            epochs.append({"epoch": epoch, "train_loss": round(total / len(batches), 4), **m})
            logger.info("lam %g epoch %d: %s", lam, epoch, epochs[-1])
        result["learned"][str(lam)] = {"epochs": epochs, "seconds": round(time.perf_counter() - t0, 1)}
    write_result(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
