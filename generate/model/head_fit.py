"""The ``calibrated`` head's fit: output rows for the new ids from three numbers, chosen on the model's own states.

With ``h`` a final hidden state (the output layer's input) over the calibration positions, three fixed
directions are read off the data: ``u``, the unit vector from the mean ``h`` at caption-target positions to the
mean ``h`` at image-target positions (what separates "next is an image token" from "next is a caption token");
``m``, the unit mean of all ``h`` (a shift shared by every position, the head's stand-in for a bias); and
``e = mean_image_h / |mean_image_h|^2`` (``h . e`` is about 1 at image positions). New id ``j`` gets the row

    r_j = a u + b m + g q_j e          (padding rows stay zero)

where ``q_j`` is the smoothed log unigram frequency of image token ``j`` in training images (structure tokens
get the value of an unseen image token). At a position, with ``L`` the logsumexp of its text logits (untouched),
the normalizer is ``Z = logsumexp(L, log sum_j exp(h . r_j), log P)`` (``P`` zero padding rows), the loss of a
new target ``j`` is ``Z - h . r_j`` (the step-0 image or structure loss) and ``Z - L`` at a caption target is
``-log`` of the mass left on the text rows (the KL(base || expanded) there).

:func:`fit_head` minimizes ``mean(new-target losses) + lam * mean(text-target KL)`` over ``(a, b, g)``: convex
(log-sum-exp of affine functions), solved by L-BFGS from zero (the zero head) in float64, so the result is
deterministic for given hidden states, and three numbers do not overfit a few calibration sequences (the zero
head is the family's origin). ``lam`` is the smallest of a geometric ladder whose solution keeps the text-side
KL at or below ``text_budget``. Without caption positions (image-only sequences) ``u`` is zero and one solve with
``lam = 0`` is done.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

TEXT_BUDGET = 5e-3  #: nats of KL(base || expanded) allowed at the calibration's caption positions
LAMBDAS = tuple(4.0 ** k for k in range(0, 13))  #: the penalty ladder, 1 .. ~1.7e7
RIDGE = 1e-6  #: on |(a, b, g)|^2: keeps the problem bounded when the two kinds of positions separate


@dataclass(frozen=True)
class Features:
    """Hidden states, text logsumexps and targets at the two kinds of calibration positions."""

    new_h: torch.Tensor  #: (N1, d) positions whose target is an image or structure id
    new_lse: torch.Tensor  #: (N1,) logsumexp of their text logits
    new_target: torch.Tensor  #: (N1,) int64 index of the target among the new rows
    text_h: torch.Tensor  #: (N2, d) positions whose target is a caption token
    text_lse: torch.Tensor  #: (N2,)


@dataclass(frozen=True)
class HeadFit:
    directions: torch.Tensor  #: (3, d): u, m, e
    coefficients: torch.Tensor  #: (3,): a, b, g
    lam: float
    new_loss: float  #: mean loss at new-target positions (calibration set)
    text_kl: float  #: mean KL at text-target positions (calibration set)

    def rows(self, q: torch.Tensor) -> torch.Tensor:
        """(n, d) output rows for the new ids with log-frequencies ``q``."""
        a, b, g = self.coefficients.tolist()
        u, m, e = self.directions
        return (a * u + b * m)[None, :] + g * q[:, None] * e[None, :]

    def to_json(self) -> dict:
        a, b, g = self.coefficients.tolist()
        return {"a": a, "b": b, "g": g, "lambda": self.lam, "fit_new_target_loss": self.new_loss,
                "fit_text_kl": self.text_kl}


def directions(f: Features) -> torch.Tensor:
    """(3, d) float64: u, m, e (module docstring)."""
    mean_new = f.new_h.mean(0)
    both = torch.cat([f.new_h, f.text_h])
    m = both.mean(0)
    m = m / m.norm().clamp_min(1e-12)
    u = torch.zeros_like(m)
    if len(f.text_h):
        u = mean_new - f.text_h.mean(0)
        u = u / u.norm().clamp_min(1e-12)
    e = mean_new / mean_new.pow(2).sum().clamp_min(1e-12)
    return torch.stack([u, m, e])


def _terms(theta, proj_new, proj_text, f: Features, q: tuple[torch.Tensor, torch.Tensor], log_p: float | None,
           q_target: torch.Tensor):
    """(mean new-target loss, mean text-target KL) at coefficients ``theta``."""
    values, log_counts = q

    def normalizer(proj, lse):
        s = proj[:, :2] @ theta[:2]
        spread = torch.logsumexp(theta[2] * proj[:, 2:3] * values[None, :] + log_counts, dim=1)  # log sum_j exp(g q_j h.e)
        parts = [lse, s + spread] + ([torch.full_like(s, log_p)] if log_p is not None else [])
        return torch.stack(parts).logsumexp(0), s

    z_new, s_new = normalizer(proj_new, f.new_lse)
    chosen = s_new + theta[2] * proj_new[:, 2] * q_target
    new = (z_new - chosen).mean() if len(chosen) else theta.sum() * 0
    z_text, _ = normalizer(proj_text, f.text_lse)
    text = (z_text - f.text_lse).mean() if len(f.text_lse) else theta.sum() * 0
    return new, text


def fit_head(features: Features, q: torch.Tensor, padding_rows: int, *, text_budget: float = TEXT_BUDGET) -> HeadFit:
    """The coefficients ``(a, b, g)`` (module docstring), fitted in float64; ``q``: (n,) log-frequencies."""
    f = Features(features.new_h.double(), features.new_lse.double(), features.new_target.long(),
                 features.text_h.double(), features.text_lse.double())
    q = q.double()
    values, counts = torch.unique(q, return_counts=True)  # few distinct frequencies: sum over them, not over ids
    spread_q, q_target = (values, counts.double().log()[None, :]), q[f.new_target]
    dirs = directions(f)
    proj_new, proj_text = f.new_h @ dirs.T, f.text_h @ dirs.T
    log_p = math.log(padding_rows) if padding_rows else None
    theta = torch.zeros(3, dtype=torch.float64)
    ladder = LAMBDAS if len(f.text_lse) else (0.0,)
    for lam in ladder:
        theta = _solve(theta, lam, lambda t: _terms(t, proj_new, proj_text, f, spread_q, log_p, q_target))
        new, text = (float(x) for x in _terms(theta, proj_new, proj_text, f, spread_q, log_p, q_target))
        if text <= text_budget:
            break
    else:
        logger.warning("calibrated head: text-side KL %.4g nats exceeds the budget %.4g even at lambda %g",
                       text, text_budget, ladder[-1])
    logger.info("calibrated head: lambda %g, new-target loss %.4f, text KL %.3g on %d + %d positions", lam, new, text,
                len(f.new_lse), len(f.text_lse))
    return HeadFit(dirs.float(), theta.float(), float(lam), new, text)


def _solve(start: torch.Tensor, lam: float, terms) -> torch.Tensor:
    theta = start.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([theta], lr=1.0, max_iter=100, tolerance_grad=1e-10, tolerance_change=1e-14,
                                  history_size=10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        new, text = terms(theta)
        loss = new + lam * text + RIDGE * theta.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return theta.detach()
