"""The ``calibrated`` head's fit: output rows for the new ids from four numbers, chosen on the model's own states.

With ``h`` a final hidden state (the output layer's input) over the calibration positions, fixed directions are
read off the data and the LM: ``u``, the unit vector from the mean ``h`` at caption-target positions to the mean
``h`` at image-target positions (what separates "next is an image token" from "next is a caption token"); ``m``,
the unit mean of all ``h`` (a shift shared by every position, the head's stand-in for a bias); ``t``, the mean of
the LM's text output rows (what Hugging Face's mean resizing gives every new output row); and
``e = mean_image_h / |mean_image_h|^2`` (``h . e`` is about 1 at image positions). New id ``j`` gets the row

    r_j = a u + b m + w t + g q_j e          (padding rows stay zero)

where ``q_j`` is the smoothed log unigram frequency of image token ``j`` in training images (structure tokens
get the value of an unseen image token). With ``a = b = g = 0, w = 1`` the rows are the ``mean`` init's output
rows, with all zero the ``zero`` head. A copy term ``c x_j`` (id ``j``'s own input row, as a tied head has) was
tried: it changed the tests' step-0 image loss by under 0.1 nats, and it makes every evaluation of the loss touch
every new id at every position (minutes for a 16,384-code book on a CPU), so it is not in the family. Without it
the loss only needs, per position, the log-sum-exp over the *distinct* values of ``q`` (a few hundred, weighted
by how many ids share each) instead of over every id.

At a position, with ``L`` the logsumexp of its text logits (untouched), the normalizer is
``Z = logsumexp(L, log sum_j exp(h . r_j), log P)`` (``P`` zero padding rows), the loss of a new target ``j`` is
``Z - h . r_j`` (the step-0 image or structure loss) and ``Z - L`` at a caption target is ``-log`` of the mass
left on the text rows (the KL(base || expanded) there). :func:`fit_head` minimizes
``mean(new-target losses) + lam * mean(text-target KL)`` over ``(a, b, w, g)``: convex (log-sum-exp of affine
functions), solved by L-BFGS from zero in float64, so the result is deterministic for given hidden states, and
four numbers do not overfit a few calibration sequences. ``lam`` is the smallest of a geometric ladder (factor
4, refined by two bisections to a factor of about 1.4) whose solution keeps the text-side KL at or below
``text_budget``. Without caption positions (image-only sequences) ``u`` is zero and one solve with ``lam = 0``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)

TEXT_BUDGET = 7.5e-3  #: nats of KL(base || expanded) allowed at the calibration's caption positions (0.01 is the limit)
LAMBDAS = tuple(4.0 ** k for k in range(0, 13))  #: the penalty ladder, 1 .. ~1.7e7
RIDGE = 1e-6  #: on |(a, b, w, g)|^2: keeps the problem bounded when the two kinds of positions separate
REFINE = 2  #: bisections (in log lambda) between the first feasible rung and the one below
NAMES = ("a", "b", "w", "g")  #: the coefficients of u, m, t and q_j e


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
    directions: torch.Tensor  #: (4, d): u, m, t, e
    coefficients: torch.Tensor  #: (4,): a, b, w, g
    lam: float
    new_loss: float  #: mean loss at new-target positions (calibration set)
    text_kl: float  #: mean KL at text-target positions (calibration set)

    def rows(self, q: torch.Tensor) -> torch.Tensor:
        """(n, d) output rows for the new ids with log-frequencies ``q``."""
        a, b, w, g = self.coefficients.tolist()
        u, m, t, e = self.directions
        shared = (a * u + b * m + w * t)[None, :]
        return shared + g * q[:, None] * e[None, :]

    def to_json(self) -> dict:
        return {**dict(zip(NAMES, self.coefficients.tolist())), "lambda": self.lam,
                "fit_new_target_loss": self.new_loss, "fit_text_kl": self.text_kl}


@dataclass(frozen=True)
class _Side:
    """One kind of position, projected: what the loss needs of it (float64)."""

    shared: torch.Tensor  #: (N, 3) h . (u, m, t)
    he: torch.Tensor  #: (N,) h . e
    lse: torch.Tensor  #: (N,) text logsumexp


def directions(f: Features, text_head_mean: torch.Tensor) -> torch.Tensor:
    """(4, d) float64: u, m, t, e (module docstring)."""
    mean_new = f.new_h.mean(0)
    both = torch.cat([f.new_h, f.text_h])
    m = both.mean(0)
    m = m / m.norm().clamp_min(1e-12)
    u = torch.zeros_like(m)
    if len(f.text_h):
        u = mean_new - f.text_h.mean(0)
        u = u / u.norm().clamp_min(1e-12)
    e = mean_new / mean_new.pow(2).sum().clamp_min(1e-12)
    return torch.stack([u, m, text_head_mean.double(), e])


@dataclass(frozen=True)
class _Frequencies:
    """The new ids' log-frequencies, grouped: each distinct value once, with the log of how many ids have it."""

    values: torch.Tensor  #: (U,) float64
    log_count: torch.Tensor  #: (U,) float64

    @classmethod
    def of(cls, q: torch.Tensor) -> "_Frequencies":
        values, counts = torch.unique(q.double(), return_counts=True)
        return cls(values, counts.double().log())


def _side(h: torch.Tensor, lse: torch.Tensor, dirs: torch.Tensor) -> _Side:
    proj = h @ dirs.T
    return _Side(proj[:, :3], proj[:, 3], lse)


def _normalizer(theta, side: _Side, freq: _Frequencies, log_p: float | None):
    """(Z, shared logit part) per position at coefficients ``theta``."""
    s = side.shared @ theta[:3]
    spread = torch.logsumexp(theta[3] * side.he[:, None] * freq.values[None, :] + freq.log_count[None, :], dim=1)
    parts = [side.lse, s + spread] + ([torch.full_like(s, log_p)] if log_p is not None else [])
    return torch.stack(parts).logsumexp(0), s


def _terms(theta, new: _Side, text: _Side, q: torch.Tensor, freq: _Frequencies, target: torch.Tensor,
           log_p: float | None):
    """(mean new-target loss, mean text-target KL) at coefficients ``theta``."""
    z_new, s_new = _normalizer(theta, new, freq, log_p)
    chosen = s_new + theta[3] * new.he * q[target]
    new_loss = (z_new - chosen).mean() if len(chosen) else theta.sum() * 0
    z_text, _ = _normalizer(theta, text, freq, log_p)
    text_kl = (z_text - text.lse).mean() if len(text.lse) else theta.sum() * 0
    return new_loss, text_kl


def fit_head(features: Features, q: torch.Tensor, padding_rows: int, text_head_mean: torch.Tensor, *,
             text_budget: float | None = None) -> HeadFit:
    """The coefficients ``(a, b, w, g)`` (module docstring), fitted in float64.

    ``q``: (n,) log-frequencies of the new ids; ``text_head_mean``: (d,) the mean of the LM's text output rows."""
    text_budget = TEXT_BUDGET if text_budget is None else text_budget
    f = Features(features.new_h.double(), features.new_lse.double(), features.new_target.long(),
                 features.text_h.double(), features.text_lse.double())
    q = q.double()
    dirs = directions(f, text_head_mean)
    new, text = _side(f.new_h, f.new_lse, dirs), _side(f.text_h, f.text_lse, dirs)
    log_p = math.log(padding_rows) if padding_rows else None
    freq = _Frequencies.of(q)
    terms = lambda t: _terms(t, new, text, q, freq, f.new_target, log_p)  # noqa: E731
    lam, theta, (new_loss, text_kl) = _smallest_feasible(terms, text_budget, bool(len(f.text_lse)))
    if text_kl > text_budget:
        logger.warning("calibrated head: text-side KL %.4g nats exceeds the budget %.4g even at lambda %g",
                       text_kl, text_budget, lam)
    logger.info("calibrated head: lambda %g, new-target loss %.4f, text KL %.3g on %d + %d positions", lam,
                new_loss, text_kl, len(f.new_lse), len(f.text_lse))
    return HeadFit(dirs.float(), theta.float(), float(lam), new_loss, text_kl)


def _smallest_feasible(terms, budget: float, has_text: bool):
    """(lam, theta, (new loss, text KL)): the first rung of :data:`LAMBDAS` whose solution keeps the KL within
    ``budget``, then :data:`REFINE` halvings of the log-gap to the rung below (the KL falls as ``lam`` grows)."""
    theta = torch.zeros(len(NAMES), dtype=torch.float64)
    if not has_text:
        theta = _solve(theta, 0.0, terms)
        return 0.0, theta, tuple(float(v) for v in terms(theta))
    below = None
    for lam in LAMBDAS:
        theta = _solve(theta, lam, terms)
        values = tuple(float(v) for v in terms(theta))
        if values[1] <= budget:
            break
        below = lam
    if below is None or values[1] > budget:
        return lam, theta, values
    best = (lam, theta, values)
    for _ in range(REFINE):
        mid = math.sqrt(below * best[0])
        trial = _solve(best[1], mid, terms)
        trial_values = tuple(float(v) for v in terms(trial))
        if trial_values[1] <= budget:
            best = (mid, trial, trial_values)
        else:
            below = mid
    return best


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
