"""Output heads (docs/ARCHITECTURE.md section 4): a fused vector (B, H) -> a distribution over the 6 emotions.

Registered in :data:`~blemore_core.models.registry.HEAD` as ``cls(in_dim, *, dropout)``. Every head divides
its logits by a learned temperature T = exp(log_t) (initialised at 1) and returns a :class:`ModelOutput`
(``embedding`` set to its input). Shape legend: (B, D) pooled, (B, C) logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..labels import LABEL_SETS, NUM_EMOTIONS
from .layers import Temperature
from .output import ModelOutput
from .registry import HEAD

NUM_SETS: int = len(LABEL_SETS)
NUM_PAIRS: int = sum(len(s) == 2 for s in LABEL_SETS)
RATIO_SHARES: tuple[tuple[float, float], ...] = ((0.5, 0.5), (0.7, 0.3), (0.3, 0.7))
"""Share of (lower-index, higher-index) emotion of a pair for ratio class 0 (50/50), 1 (70/30), 2 (30/70)."""


def set_membership() -> Tensor:
    """(16, 6) float32: 1 where emotion e belongs to label set k (LABEL_SETS order)."""
    m = torch.zeros(NUM_SETS, NUM_EMOTIONS)
    for k, s in enumerate(LABEL_SETS):
        m[k, list(s)] = 1.0
    return m


def pair_indices() -> Tensor:
    """(10, 2) int64: the (lower, higher) emotion indices of the 10 pairs, in LABEL_SETS[6:] order."""
    return torch.tensor([s for s in LABEL_SETS if len(s) == 2], dtype=torch.long)


def _check(in_dim: int, dropout: float, name: str) -> None:
    if in_dim < 1:
        raise ValueError(f"models/heads.py {name}: in_dim must be >= 1, got {in_dim}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"models/heads.py {name}: reg.dropout must be in [0, 1), got {dropout}")


@HEAD.register("softmax")
class SoftmaxHead(nn.Module):
    """One distribution: p = softmax(Linear(Dropout(h)) / T). (B, H) -> logits, probs (B, 6). The baseline head."""

    def __init__(self, in_dim: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        _check(in_dim, dropout, "softmax")
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_dim, NUM_EMOTIONS)
        self.temperature = Temperature()

    def forward(self, h: Tensor) -> ModelOutput:
        logits = self.temperature(self.fc(self.drop(h)))
        return ModelOutput(logits=logits, probs=torch.softmax(logits, dim=1), embedding=h)


@HEAD.register("presence_salience")
class PresenceSalienceHead(nn.Module):
    """A sigmoid presence head and a softmax salience head fused at probability level.

    With presence logits a = P(h) / T and salience logits s = S(h) / T (both (B, 6)):

        p_e = sigmoid(a_e) * softmax(s)_e / sum_k sigmoid(a_k) * softmax(s)_k

    computed in log space (``logits`` = log p, exact log-probabilities). Our formulation after seed paper 001's
    separate presence and salience heads; the fusion into one distribution is ours, so that the thresholds and
    ensembles see one (B, 6) distribution like every other head.
    """

    def __init__(self, in_dim: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        _check(in_dim, dropout, "presence_salience")
        self.drop = nn.Dropout(dropout)
        self.presence = nn.Linear(in_dim, NUM_EMOTIONS)
        self.salience = nn.Linear(in_dim, NUM_EMOTIONS)
        self.temperature = Temperature()

    def forward(self, h: Tensor) -> ModelOutput:
        z = self.drop(h)
        a = self.temperature(self.presence(z))
        s = self.temperature(self.salience(z))
        joint = F.logsigmoid(a) + torch.log_softmax(s, dim=1)
        logits = joint - torch.logsumexp(joint, dim=1, keepdim=True)
        return ModelOutput(logits=logits, probs=logits.exp(), embedding=h, presence_logits=a, salience_logits=s)


@HEAD.register("structured")
class StructuredHead(nn.Module):
    """16-way valid label set + 3-way ratio conditioned on the pair.

    * set logits (B, 16) = Linear(h) / T over :data:`~blemore_core.labels.LABEL_SETS`;
    * ratio logits for every pair k (B, 10, 3) = MLP([h, pair_embedding_k]) / T, classes 50/50, 70/30, 30/70
      (share of the pair's lower-index emotion first, :data:`RATIO_SHARES`).

    The exposed (B, 6) distribution is the expected salience:
    p(e) = sum over sets S containing e of p(S) * share_S(e), with share 1 for singles and, for a pair,
    0.5*r_50/50 + 0.7*r_70/30 + 0.3*r_30/70 for its lower emotion (0.5, 0.3, 0.7 for the higher one).
    Rows sum to 1; ``logits`` = log(p) clamped at 1e-12. :meth:`decode_structured` returns only valid labels.
    """

    def __init__(self, in_dim: int, *, dropout: float = 0.0, pair_dim: int = 16, hidden: int = 64) -> None:
        super().__init__()
        _check(in_dim, dropout, "structured")
        self.drop = nn.Dropout(dropout)
        self.set_fc = nn.Linear(in_dim, NUM_SETS)
        self.pair_embedding = nn.Embedding(NUM_PAIRS, pair_dim)
        self.ratio = nn.Sequential(nn.Linear(in_dim + pair_dim, hidden), nn.GELU(), nn.Linear(hidden, 3))
        self.temperature = Temperature()
        self.register_buffer("membership", set_membership(), persistent=False)  # (16, 6)
        self.register_buffer("pairs", pair_indices(), persistent=False)  # (10, 2)
        self.register_buffer("shares", torch.tensor(RATIO_SHARES), persistent=False)  # (3, 2)

    def forward(self, h: Tensor) -> ModelOutput:
        z = self.drop(h)
        b = z.shape[0]
        set_logits = self.temperature(self.set_fc(z))
        pe = self.pair_embedding.weight[None].expand(b, -1, -1)  # (B, 10, P)
        pair_ratio = self.temperature(self.ratio(torch.cat([z[:, None, :].expand(-1, NUM_PAIRS, -1), pe], dim=2)))
        p_set = torch.softmax(set_logits, dim=1)  # (B, 16)
        r = torch.softmax(pair_ratio, dim=2)  # (B, 10, 3)
        share = r @ self.shares  # (B, 10, 2): expected share of lower / higher emotion
        n_single = NUM_SETS - NUM_PAIRS
        probs = p_set[:, :n_single] @ self.membership[:n_single]  # singles: share 1
        contrib = p_set[:, n_single:, None] * share  # (B, 10, 2)
        probs = probs.index_add(1, self.pairs[:, 0], contrib[..., 0]).index_add(1, self.pairs[:, 1], contrib[..., 1])
        best_pair = p_set[:, n_single:].argmax(dim=1)
        ratio_logits = pair_ratio[torch.arange(b, device=h.device), best_pair]
        return ModelOutput(
            logits=probs.clamp_min(1e-12).log(), probs=probs, embedding=h, set_logits=set_logits,
            ratio_logits=ratio_logits, pair_ratio_logits=pair_ratio,
        )

    def decode_structured(self, out: ModelOutput) -> Tensor:
        """Most probable valid label: argmax label set, and for a pair its argmax ratio.

        Args:
            out: an output of this head (``set_logits`` (B, 16), ``pair_ratio_logits`` (B, 10, 3)).

        Returns:
            (B, 6) float32 salience array (one-hot for a single; 0.5/0.5, 0.7/0.3 or 0.3/0.7 on a pair).

        Raises:
            ValueError: when ``out`` lacks the structured fields.
        """
        return decode_structured(out)


def decode_structured(out: ModelOutput) -> Tensor:
    """See :meth:`StructuredHead.decode_structured`; (B, 6) salience arrays of valid labels only."""
    if out.set_logits is None or out.pair_ratio_logits is None:
        raise ValueError("models/heads.py decode_structured: output has no set_logits/pair_ratio_logits "
                         "(model.head must be 'structured')")
    sets = out.set_logits.argmax(dim=1)  # (B,)
    b = sets.shape[0]
    dev = out.set_logits.device
    membership = set_membership().to(dev)
    pairs = pair_indices().to(dev)
    shares = torch.tensor(RATIO_SHARES, device=dev)
    y = membership[sets].clone()  # singles: one-hot
    n_single = NUM_SETS - NUM_PAIRS
    is_pair = sets >= n_single
    k = (sets - n_single).clamp_min(0)
    ratio = out.pair_ratio_logits[torch.arange(b, device=dev), k].argmax(dim=1)
    rows = torch.nonzero(is_pair).squeeze(1)
    y[rows, pairs[k[rows], 0]] = shares[ratio[rows], 0]
    y[rows, pairs[k[rows], 1]] = shares[ratio[rows], 1]
    return y.float()
