"""The calibrated head's loss, evaluated over distinct frequencies, equals the plain per-id evaluation."""

from __future__ import annotations

import math

import torch

from tokalign.generate.model import head_fit as hf


def _plain_terms(theta, h_new, lse_new, target, h_text, lse_text, dirs, q, log_p):
    """Every new id's logit written out: rows r_j = a u + b m + w t + g q_j e, then log-softmax with the text
    logsumexp and the padding rows."""
    a, b, w, g = theta
    u, m, t, e = dirs
    rows = (a * u + b * m + w * t)[None, :] + g * q[:, None] * e[None, :]

    def normalizer(h, lse):
        logits = h @ rows.T
        return torch.stack([lse, logits.logsumexp(1), torch.full_like(lse, log_p)]).logsumexp(0), logits

    z_new, logits = normalizer(h_new, lse_new)
    new_loss = (z_new - logits.gather(1, target[:, None])[:, 0]).mean()
    z_text, _ = normalizer(h_text, lse_text)
    return new_loss, (z_text - lse_text).mean()


def test_grouped_terms_match_the_plain_loss_forward_and_backward():
    g = torch.Generator().manual_seed(0)
    d, n, n_new, n_text = 12, 37, 23, 19
    q = torch.log((torch.randint(0, 5, (n,), generator=g).double() + 1) / 100)  # many ids share a value
    f = hf.Features(torch.randn(n_new, d, generator=g, dtype=torch.float64), torch.randn(n_new, generator=g).double(),
                    torch.randint(0, n, (n_new,), generator=g), torch.randn(n_text, d, generator=g).double(),
                    torch.randn(n_text, generator=g).double())
    dirs = hf.directions(f, torch.randn(d, generator=g).double())
    new, text = hf._side(f.new_h, f.new_lse, dirs), hf._side(f.text_h, f.text_lse, dirs)
    log_p = math.log(7)
    theta = torch.tensor([0.7, -0.3, 1.1, 0.5], dtype=torch.float64, requires_grad=True)
    mine = hf._terms(theta, new, text, q, hf._Frequencies.of(q), f.new_target, log_p)
    grads = torch.autograd.grad(mine[0] + 3 * mine[1], theta)[0]
    plain = _plain_terms(theta, f.new_h, f.new_lse, f.new_target, f.text_h, f.text_lse, dirs, q, log_p)
    plain_grads = torch.autograd.grad(plain[0] + 3 * plain[1], theta)[0]
    assert torch.allclose(torch.stack(mine), torch.stack(plain), rtol=1e-12, atol=1e-12)
    assert torch.allclose(grads, plain_grads, rtol=1e-10, atol=1e-12)
    assert len(hf._Frequencies.of(q).values) < n


def test_fitted_rows_are_the_family_at_the_fitted_numbers():
    g = torch.Generator().manual_seed(1)
    d, n = 8, 11
    f = hf.Features(torch.randn(40, d, generator=g) + 1, torch.randn(40, generator=g) + 8,
                    torch.randint(0, n, (40,), generator=g), torch.randn(30, d, generator=g) - 1,
                    torch.randn(30, generator=g) + 8)
    q = torch.log(torch.rand(n, generator=g) / 10)
    fit = hf.fit_head(f, q, 0, torch.randn(d, generator=g))
    a, b, w, gq = fit.coefficients.tolist()
    u, m, t, e = fit.directions
    expected = (a * u + b * m + w * t)[None, :] + gq * q[:, None] * e[None, :]
    assert torch.allclose(fit.rows(q), expected, atol=1e-6) and fit.text_kl <= hf.TEXT_BUDGET + 1e-9
