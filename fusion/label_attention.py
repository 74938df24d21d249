"""Label-wise attention fusion heads: every code is a query over the note's segments.

Three heads, all registered in :data:`fusion.registry.fusion_registry`:

* ``"zero_shot"`` (:class:`ZeroShotFusion`): no projection at all. A code's score is a smooth
  maximum over the note's segments of the cosine similarity between the segment vector and the
  code's text vector; the softmax that makes the maximum smooth is the attention (evidence). Only a
  scale and a bias are learnable (calibration), so the ranking is the encoder's own and is the same
  for seen and unseen codes.
* ``"label_attention"`` (:class:`LabelAttentionFusion`): LAAT-style supervised attention (Vu et al.,
  IJCAI 2020) with the code side computed from the code's embedding (text, or text + graph),
  never from a free per-code parameter, so it is defined for codes never seen in training.
* ``"hybrid_label_attention"`` (:class:`HybridLabelAttention`): the sum of the two, ``a * zero_shot
  + b * label_attention``, with the code input split into its text part (for the zero-shot path)
  and its full text+graph vector (for the supervised path). The weights ``a`` and ``b`` are
  learnable, ``b`` starts small so training starts from the zero-shot ranking.

Every head also offers :meth:`code_bank`, which precomputes what a head needs per code (so scoring
all ~98,000 ICD-10-CM codes at prediction time is two matrix products per note), and
:meth:`score_bank`, the forward pass against a precomputed bank. A bank whose tensors have a leading
batch axis (``(b, c, ...)``, ``"p"``: ``(b, c)``) gives each note its own candidate codes.

Example:
    >>> import torch
    >>> head = HybridLabelAttention(text_dim=8, code_dim=12, attn_dim=4)
    >>> seg, mask = torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)
    >>> logits, attention = head(seg, mask, torch.randn(3, 12))
    >>> tuple(logits.shape), tuple(attention.shape)
    ((2, 3), (2, 3, 5))
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fusion.base import Fusion
from fusion.registry import fusion_registry

__all__ = ["HybridLabelAttention", "LabelAttentionFusion", "ZeroShotFusion"]

_NEG = -1e4  # a large negative logit for padded segments (finite: bf16 and softmax stay NaN-free)


def _check(segments: Tensor, segment_mask: Tensor, codes: Tensor, code_dim: int) -> None:
    if segments.ndim != 3:
        raise ValueError(f"segments must be (batch, num_segments, dim), got {tuple(segments.shape)}")
    if segment_mask.shape != segments.shape[:2]:
        raise ValueError(
            f"segment_mask {tuple(segment_mask.shape)} does not match segments {tuple(segments.shape[:2])}"
        )
    if codes.ndim != 2 or codes.shape[1] != code_dim:
        raise ValueError(f"codes must be (num_codes, {code_dim}), got {tuple(codes.shape)}")


def _per_note(equation: str, bank_tensor: Tensor) -> str:
    """A bank tensor with a leading batch axis holds each note's own candidate codes: ``cd`` -> ``bcd``."""
    if bank_tensor.ndim == 3:
        inputs, output = equation.split("->")
        first, second = inputs.split(",")
        return f"{first},b{second}->{output}"
    return equation


def _masked_softmax(scores: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the last axis (segments); a note without segments gets all-zero weights.

    Shapes:
        scores: ``(b, c, s)``; mask: ``(b, s)`` bool; output: ``(b, c, s)``.
    """
    m = mask[:, None, :]
    weights = torch.softmax(scores.masked_fill(~m, _NEG), dim=-1)
    return weights * m.to(weights.dtype)


# --------------------------------------------------------------------------- zero-shot


@fusion_registry.register
class ZeroShotFusion(Fusion):
    """Cosine similarity between code text and note segments, smooth-maxed over segments.

    ``attention = softmax_s(cos(segment_s, code) / temperature)`` and
    ``logit = scale * sum_s attention_s * cos(segment_s, code) + bias``. With a small temperature
    this is the maximum similarity over sentences (the zero-shot baseline of the issue); ``scale``
    and ``bias`` only calibrate it (they never change a note's ranking).

    Args:
        dim: size of segment and code vectors.
        temperature: softmax temperature over segments (0.05 is close to a hard maximum for
            MiniLM cosine similarities).
        scale: initial logit scale.
        bias: initial logit bias (centres typical similarities around a probability of 0.5).
    """

    name = "zero_shot"

    def __init__(self, dim: int, temperature: float = 0.05, scale: float = 20.0, bias: float = -12.0) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature={temperature}: expected > 0")
        self.dim = int(dim)
        self.temperature = float(temperature)
        self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))
        self.bias = nn.Parameter(torch.tensor(float(bias)))
        self._init = (scale, bias)

    def reset_parameters(self) -> None:
        """Back to the initial calibration."""
        with torch.no_grad():
            self.log_scale.fill_(math.log(self._init[0]))
            self.bias.fill_(self._init[1])

    def similarity(self, segments: Tensor, segment_mask: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
        """The uncalibrated smooth-max similarity and the attention.

        Shapes:
            segments: ``(b, s, dim)``; codes: ``(c, dim)``; output: ``(b, c)`` and ``(b, c, s)``.
        """
        seg = F.normalize(segments, dim=-1)
        cod = F.normalize(codes, dim=-1)
        sim = torch.einsum("bsd,cd->bcs", seg, cod)
        attention = _masked_softmax(sim / self.temperature, segment_mask)
        return (attention * sim).sum(-1), attention

    def forward(self, segments: Tensor, segment_mask: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
        """Score codes for each note (see :class:`fusion.base.Fusion`).

        Shapes:
            segments: ``(b, s, dim)``; segment_mask: ``(b, s)``; codes: ``(c, dim)``;
            logits: ``(b, c)``; attention: ``(b, c, s)``.
        """
        _check(segments, segment_mask, codes, self.dim)
        score, attention = self.similarity(segments, segment_mask, codes)
        return self.log_scale.exp() * score + self.bias, attention

    def code_bank(self, codes: Tensor) -> dict[str, Tensor]:
        """Per-code tensors for :meth:`score_bank` (the normalised code vectors).

        Shapes:
            codes: ``(c, dim)``; ``"zs"``: ``(c, dim)``.
        """
        return {"zs": F.normalize(codes.float(), dim=-1)}

    def score_bank(
        self, segments: Tensor, segment_mask: Tensor, bank: dict[str, Tensor], *, attention: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Scores against a precomputed bank; the attention only when asked (it is large).

        Shapes:
            segments: ``(b, s, dim)``; logits: ``(b, c)``; attention: ``(b, c, s)``.
        """
        seg = F.normalize(segments, dim=-1).to(bank["zs"].dtype)
        sim = torch.einsum(_per_note("bsd,cd->bcs", bank["zs"]), seg, bank["zs"]).float()
        weights = _masked_softmax(sim / self.temperature, segment_mask)
        logits = self.log_scale.exp() * (weights * sim).sum(-1) + self.bias
        return logits, (weights if attention else None)

    def get_config(self) -> dict[str, Any]:
        """Registry name and constructor arguments."""
        return {
            "name": self.name,
            "kwargs": {
                "dim": self.dim,
                "temperature": self.temperature,
                "scale": self._init[0],
                "bias": self._init[1],
            },
        }


# --------------------------------------------------------------------------- supervised


@fusion_registry.register
class LabelAttentionFusion(Fusion):
    """Label-wise attention (LAAT-style) with code-derived queries and bounded, cosine scores.

    ``attention_cs = softmax_s(attn_scale * cos(segments_s W_k, codes_c W_q))`` and
    ``logit_c = out_scale * sum_s attention_cs * cos(segments_s W_v, codes_c W_o) + prior_c`` with
    ``prior_c = prior_scale * tanh(codes_c . w + b)``.

    Why cosines and a bounded prior: at prediction time the head scores ~98,000 codes, most of
    which never appeared as a training candidate. An unbounded bilinear score or linear prior
    extrapolates to huge values for some of them and they crowd the top of every ranking (measured
    here: dev MAP 0.0007 after one epoch); cosine scores stay within ``[-out_scale, out_scale]``.

    With ``init="identity"`` (default) the projections start as the identity on the text part of the
    code vector (each further block, e.g. the graph vector that starts equal to the text vector,
    shares the identity), so an untrained head *is* the zero-shot scorer and training moves away
    from it. Because ``query`` and ``out`` are computed from the code's embedding, never from a free
    per-code parameter, a code never seen in training is scored too.

    Args:
        seg_dim: size of segment vectors.
        code_dim: size of code vectors.
        attn_dim: size of the attention and value spaces (default ``seg_dim``, needed by the
            identity initialisation).
        dropout: dropout on segments during training.
        init: ``"identity"`` or ``"xavier"``.
        attn_scale: initial inverse temperature of the attention softmax.
        out_scale: initial scale of the output cosine.
    """

    name = "label_attention"

    def __init__(
        self,
        seg_dim: int,
        code_dim: int,
        attn_dim: int | None = None,
        dropout: float = 0.1,
        init: str = "identity",
        attn_scale: float = 20.0,
        out_scale: float = 10.0,
    ) -> None:
        super().__init__()
        if init not in ("identity", "xavier"):
            raise ValueError(f"init={init!r}: expected 'identity' or 'xavier'")
        self.seg_dim, self.code_dim = int(seg_dim), int(code_dim)
        self.attn_dim = int(attn_dim or seg_dim)
        self.dropout_p, self.init, self._scales = float(dropout), init, (float(attn_scale), float(out_scale))
        self.key = nn.Linear(self.seg_dim, self.attn_dim, bias=False)
        self.value = nn.Linear(self.seg_dim, self.attn_dim, bias=False)
        self.query = nn.Linear(self.code_dim, self.attn_dim, bias=False)
        self.out = nn.Linear(self.code_dim, self.attn_dim, bias=False)
        self.prior = nn.Linear(self.code_dim, 1)
        self.log_attn_scale = nn.Parameter(torch.tensor(0.0))
        self.log_out_scale = nn.Parameter(torch.tensor(0.0))
        self.prior_scale = nn.Parameter(torch.tensor(0.0))
        self.dropout = nn.Dropout(dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Identity (or Xavier) projections, initial scales, a prior that starts at zero."""
        with torch.no_grad():
            for lin, width in (
                (self.key, self.seg_dim),
                (self.value, self.seg_dim),
                (self.query, self.code_dim),
                (self.out, self.code_dim),
            ):
                if self.init == "xavier":
                    nn.init.xavier_uniform_(lin.weight)
                    continue
                lin.weight.zero_()
                n = min(self.attn_dim, self.seg_dim)
                blocks = max(1, width // self.seg_dim)
                for b in range(blocks):
                    lin.weight[:n, b * self.seg_dim : b * self.seg_dim + n] += torch.eye(n) / blocks
            nn.init.zeros_(self.prior.weight)
            nn.init.zeros_(self.prior.bias)
            self.log_attn_scale.fill_(math.log(self._scales[0]))
            self.log_out_scale.fill_(math.log(self._scales[1]))
            self.prior_scale.fill_(1.0)  # with a zero w, the prior starts at tanh(0) = 0 and still learns

    def _keys_values(self, segments: Tensor) -> tuple[Tensor, Tensor]:
        seg = self.dropout(segments)
        return F.normalize(self.key(seg), dim=-1), F.normalize(self.value(seg), dim=-1)

    def _prior(self, codes: Tensor) -> Tensor:
        return self.prior_scale * torch.tanh(self.prior(codes).squeeze(-1))

    def evidence(self, segments: Tensor, segment_mask: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
        """Per-code evidence vectors (the attention-weighted, projected note) and the attention.

        Shapes:
            segments: ``(b, s, seg_dim)``; codes: ``(c, code_dim)``;
            output: ``(b, c, attn_dim)`` and ``(b, c, s)``.
        """
        keys, values = self._keys_values(segments)
        query = F.normalize(self.query(codes), dim=-1)
        scores = torch.einsum("bsa,ca->bcs", keys, query) * self.log_attn_scale.exp()
        attention = _masked_softmax(scores, segment_mask)
        return torch.einsum("bcs,bsa->bca", attention, values), attention

    def forward(self, segments: Tensor, segment_mask: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
        """Score codes for each note (see :class:`fusion.base.Fusion`).

        Shapes:
            segments: ``(b, s, seg_dim)``; segment_mask: ``(b, s)``; codes: ``(c, code_dim)``;
            logits: ``(b, c)``; attention: ``(b, c, s)``.
        """
        _check(segments, segment_mask, codes, self.code_dim)
        return self.score_bank(segments, segment_mask, self.code_bank(codes), attention=True)  # type: ignore[return-value]

    def code_bank(self, codes: Tensor) -> dict[str, Tensor]:
        """Per-code normalised query and output vectors and the prior, for :meth:`score_bank`.

        Shapes:
            codes: ``(c, code_dim)``; ``"q"``, ``"o"``: ``(c, attn_dim)``; ``"p"``: ``(c,)``.
        """
        return {
            "q": F.normalize(self.query(codes), dim=-1),
            "o": F.normalize(self.out(codes), dim=-1),
            "p": self._prior(codes),
        }

    def score_bank(
        self, segments: Tensor, segment_mask: Tensor, bank: dict[str, Tensor], *, attention: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Scores against a precomputed bank.

        Shapes:
            segments: ``(b, s, seg_dim)``; logits: ``(b, c)``; attention: ``(b, c, s)``.
        """
        keys, values = self._keys_values(segments)
        dtype = bank["q"].dtype
        scores = torch.einsum(_per_note("bsa,ca->bcs", bank["q"]), keys.to(dtype), bank["q"]).float()
        scores = scores * self.log_attn_scale.exp()
        weights = _masked_softmax(scores, segment_mask)
        per_seg = torch.einsum(_per_note("bsa,ca->bcs", bank["o"]), values.to(dtype), bank["o"]).float()
        logits = self.log_out_scale.exp() * (weights * per_seg).sum(-1) + bank["p"].float()
        return logits, (weights if attention else None)

    def get_config(self) -> dict[str, Any]:
        """Registry name and constructor arguments."""
        return {
            "name": self.name,
            "kwargs": {
                "seg_dim": self.seg_dim,
                "code_dim": self.code_dim,
                "attn_dim": self.attn_dim,
                "dropout": self.dropout_p,
                "init": self.init,
                "attn_scale": self._scales[0],
                "out_scale": self._scales[1],
            },
        }


# --------------------------------------------------------------------------- hybrid


@fusion_registry.register
class HybridLabelAttention(Fusion):
    """``a * zero_shot + b * label_attention``: keeps the zero-shot path while learning from notes.

    The code input is ``[text vector ; graph vector]`` (``code_dim`` columns, the first
    ``text_dim`` of them the code's text embedding, in the segments' space). The zero-shot path
    compares segments with the text part; the supervised path reads the whole vector. Both paths'
    logits are returned by :meth:`parts` so that training can supervise and measure each.

    Args:
        text_dim: size of segment vectors and of the text part of a code vector.
        code_dim: size of a code vector (``text_dim`` + graph part; equal to ``text_dim`` without
            a graph encoder).
        attn_dim: size of the supervised attention space (default ``text_dim``).
        temperature: zero-shot softmax temperature.
        zero_shot_weight: initial ``a``.
        supervised_weight: initial ``b`` (small: training starts from the zero-shot ranking).
        dropout: dropout on segments in the supervised path.
        bias: initial logit bias. Negative (-4: probability ~0.02 for a code with no evidence) so
            that the first steps are not spent pushing the thousands of negative candidates down,
            which otherwise collapses the supervised output space (every code at cos -1).
    """

    name = "hybrid_label_attention"

    def __init__(
        self,
        text_dim: int,
        code_dim: int,
        attn_dim: int | None = None,
        temperature: float = 0.05,
        zero_shot_weight: float = 1.0,
        supervised_weight: float = 0.1,
        dropout: float = 0.1,
        bias: float = -4.0,
    ) -> None:
        super().__init__()
        if code_dim < text_dim:
            raise ValueError(
                f"code_dim={code_dim} < text_dim={text_dim}: codes must start with the text part"
            )
        self.text_dim, self.code_dim = int(text_dim), int(code_dim)
        self._kwargs = {
            "attn_dim": int(attn_dim or text_dim),
            "temperature": float(temperature),
            "zero_shot_weight": float(zero_shot_weight),
            "supervised_weight": float(supervised_weight),
            "dropout": float(dropout),
            "bias": float(bias),
        }
        self.zero_shot = ZeroShotFusion(text_dim, temperature=temperature, scale=1.0, bias=0.0)
        self.zero_shot.log_scale.requires_grad_(False)
        self.zero_shot.bias.requires_grad_(False)
        self.supervised = LabelAttentionFusion(
            text_dim, code_dim, attn_dim=attn_dim, dropout=dropout, attn_scale=1.0 / temperature
        )
        self.weights = nn.Parameter(torch.tensor([float(zero_shot_weight), float(supervised_weight)]))
        self.bias = nn.Parameter(torch.tensor(float(bias)))

    def reset_parameters(self) -> None:
        """Back to the initial weights."""
        self.supervised.reset_parameters()
        with torch.no_grad():
            self.weights.copy_(
                torch.tensor([self._kwargs["zero_shot_weight"], self._kwargs["supervised_weight"]])
            )
            self.bias.fill_(self._kwargs["bias"])

    def parts(
        self, segments: Tensor, segment_mask: Tensor, codes: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The two paths separately.

        Returns:
            ``(zero_shot_similarity, supervised_logit, zero_shot_attention, supervised_attention)``.

        Shapes:
            logits ``(b, c)``; attentions ``(b, c, s)``.
        """
        _check(segments, segment_mask, codes, self.code_dim)
        zs, zs_att = self.zero_shot.similarity(segments, segment_mask, codes[:, : self.text_dim])
        sup, sup_att = self.supervised(segments, segment_mask, codes)
        return zs, sup, zs_att, sup_att

    def combine(self, zs: Tensor, sup: Tensor) -> Tensor:
        """``a * zs + b * sup + bias``."""
        return self.weights[0] * zs + self.weights[1] * sup + self.bias

    def forward(self, segments: Tensor, segment_mask: Tensor, codes: Tensor) -> tuple[Tensor, Tensor]:
        """Score codes for each note (see :class:`fusion.base.Fusion`).

        The attention returned is the supervised path's, averaged with the zero-shot one in
        proportion to the two paths' weights.

        Shapes:
            segments: ``(b, s, text_dim)``; segment_mask: ``(b, s)``; codes: ``(c, code_dim)``;
            logits: ``(b, c)``; attention: ``(b, c, s)``.
        """
        zs, sup, zs_att, sup_att = self.parts(segments, segment_mask, codes)
        return self.combine(zs, sup), self._mix_attention(zs_att, sup_att)

    def _mix_attention(self, zs_att: Tensor, sup_att: Tensor) -> Tensor:
        w = self.weights.detach().abs()
        share = (w[0] / w.sum().clamp(min=1e-6)).to(zs_att.dtype)
        return share * zs_att + (1 - share) * sup_att

    def code_bank(self, codes: Tensor) -> dict[str, Tensor]:
        """Both paths' banks (keys prefixed ``zs`` / ``q``, ``o``, ``p``).

        Shapes:
            codes: ``(c, code_dim)``.
        """
        bank = self.zero_shot.code_bank(codes[:, : self.text_dim])
        bank.update(self.supervised.code_bank(codes))
        return bank

    def score_bank(
        self, segments: Tensor, segment_mask: Tensor, bank: dict[str, Tensor], *, attention: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Scores (and optionally the mixed attention) against a precomputed bank.

        Shapes:
            segments: ``(b, s, text_dim)``; logits: ``(b, c)``; attention: ``(b, c, s)``.
        """
        zs, zs_att = self.zero_shot.score_bank(segments, segment_mask, bank, attention=attention)
        sup, sup_att = self.supervised.score_bank(segments, segment_mask, bank, attention=attention)
        logits = self.combine(zs, sup)
        if not attention:
            return logits, None
        assert zs_att is not None and sup_att is not None
        return logits, self._mix_attention(zs_att, sup_att)

    def get_config(self) -> dict[str, Any]:
        """Registry name and constructor arguments."""
        return {
            "name": self.name,
            "kwargs": {"text_dim": self.text_dim, "code_dim": self.code_dim, **self._kwargs},
        }
