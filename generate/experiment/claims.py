"""The paper's claims, each checked against a study's curves: agrees, disagrees or inconclusive, with the margin.

The margin that decides is the difference of two arms' final EMA-smoothed held-out losses against the *spread*:
the largest range (max - min) of either arm's last :data:`TAIL` raw evaluations, i.e. how much the curves still
move at the end. A difference inside the spread is no difference. Fewer than two evaluations decide nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from tokalign.generate.experiment.curves import Curve

TAIL = 3
PRETRAINED = ("mean", "random-rows", "all", "aligned")  #: arms that start from the pretrained LM, by preference


@dataclass(frozen=True)
class Verdict:
    claim: str  #: what the paper says, in short
    where: str  #: where it says it
    verdict: str  #: "agrees" | "disagrees" | "inconclusive"
    sentence: str  #: why, with the deciding margin


@dataclass(frozen=True)
class Evidence:
    """What claims read: the curves by arm, the smoothing, and (forgetting) the probe table's rows."""

    curves: dict[str, Curve]
    ema: float
    probes: list[dict]


Claim = Callable[[Evidence], Verdict]
CLAIMS: dict[str, Claim] = {}


def claim(name: str) -> Callable[[Claim], Claim]:
    def register(fn: Claim) -> Claim:
        CLAIMS[name] = fn
        return fn
    return register


def spread(a: Curve, b: Curve, bucket: str) -> float:
    ranges = [max(t) - min(t) for t in (a.tail(bucket, TAIL), b.tail(bucket, TAIL)) if t]
    return max(ranges) if ranges else math.nan


def _compare(ev: Evidence, a: str, b: str, bucket: str) -> tuple[float, float] | str:
    """(final EMA of a - final EMA of b, spread), or why the two cannot be compared."""
    missing = [n for n in (a, b) if n not in ev.curves]
    if missing:
        return f"arm {', '.join(missing)} was not run"
    ca, cb = ev.curves[a], ev.curves[b]
    if min(len(ca.tail(bucket, TAIL)), len(cb.tail(bucket, TAIL))) < 2:
        return "fewer than two held-out evaluations"
    diff = ca.final(bucket, ev.ema) - cb.final(bucket, ev.ema)
    return (diff, spread(ca, cb, bucket)) if math.isfinite(diff) else f"no finite {bucket or 'total'} loss"


def _first(ev: Evidence, names) -> str | None:
    return next((n for n in names if n in ev.curves), None)


def _no_advantage(ev: Evidence, arm: str, other: str, bucket: str, claim_text: str, where: str) -> Verdict:
    got = _compare(ev, arm, other, bucket)
    if isinstance(got, str):
        return Verdict(claim_text, where, "inconclusive", f"Cannot compare {arm} with {other}: {got}.")
    diff, noise = got
    label = f"{bucket} loss" if bucket else "loss"
    margin = f"final EMA {label} of {arm} minus {other}: {diff:+.3f} nats against a spread of {noise:.3f}"
    if diff < -noise:
        return Verdict(claim_text, where, "disagrees", f"{arm} ends lower than {other} by more than the spread ({margin}).")
    if diff > noise:
        return Verdict(claim_text, where, "agrees", f"{arm} gives no advantage: it ends higher than {other} ({margin}).")
    return Verdict(claim_text, where, "agrees", f"{arm} and {other} end within the spread ({margin}).")


@claim("pretrained-no-image-advantage")
def pretrained_no_image_advantage(ev: Evidence) -> Verdict:
    text = "A pretrained LM gives no lasting advantage over a random init on image tokens (FID 12.21 vs 12.27)"
    arm = _first(ev, PRETRAINED) or "a pretrained arm"
    return _no_advantage(ev, arm, "scratch", "image", text, "Figures 3, 4 and 6")


@claim("aligned-no-help")
def aligned_no_help(ev: Evidence) -> Verdict:
    text = "Initializing image rows from the contrastive alignment brings no improvement over random rows"
    return _no_advantage(ev, "aligned", "random-rows", "image", text, "section 3.2")


@claim("pretrained-text-advantage-fades")
def pretrained_text_advantage_fades(ev: Evidence) -> Verdict:
    text = "The pretrained LM starts with a much lower text loss, and that advantage diminishes soon"
    where = "Figure 4"
    arm = _first(ev, ("mean", "random-rows", "aligned")) or "a pretrained arm"
    got = _compare(ev, arm, "scratch", "text")
    if isinstance(got, str):
        return Verdict(text, where, "inconclusive", f"Cannot compare {arm} with scratch: {got}.")
    final_gap, noise = got
    start_gap = ev.curves[arm].first("text") - ev.curves["scratch"].first("text")
    figures = (f"text loss of {arm} minus scratch: {start_gap:+.3f} nats at step 0, {final_gap:+.3f} at the end "
               f"(final EMA), spread {noise:.3f}")
    if not start_gap < -noise:
        return Verdict(text, where, "inconclusive", f"{arm} does not start lower than scratch on text ({figures}).")
    if final_gap > start_gap / 2 or abs(final_gap) <= noise:
        return Verdict(text, where, "agrees", f"The step-0 advantage of {arm} has at least halved ({figures}).")
    return Verdict(text, where, "disagrees", f"{arm} keeps more than half its step-0 text advantage ({figures}).")


@claim("freezing-hurts")
def freezing_hurts(ev: Evidence) -> Verdict:
    text = "No partially frozen pretrained model reaches the image loss of full fine-tuning"
    where = "Figure 6"
    frozen = [n for n in ev.curves if n not in ("all", "scratch")]
    results = {n: _compare(ev, n, "all", "image") for n in frozen}
    usable = {n: r for n, r in results.items() if not isinstance(r, str)}
    if not usable:
        return Verdict(text, where, "inconclusive", "No frozen arm can be compared with the fully trained one "
                       f"({'; '.join(f'{n}: {r}' for n, r in results.items()) or 'none was run'}).")
    margins = ", ".join(f"{n} {d:+.3f} (spread {s:.3f})" for n, (d, s) in usable.items())
    worse = [n for n, (d, s) in usable.items() if d > s]
    better = [n for n, (d, s) in usable.items() if d < -s]
    tail = f"final EMA image loss minus the fully trained arm's: {margins}"
    if better:
        return Verdict(text, where, "disagrees", f"{', '.join(better)} end below full fine-tuning ({tail}).")
    if len(worse) == len(usable):
        return Verdict(text, where, "agrees", f"Every frozen arm ends above full fine-tuning ({tail}).")
    return Verdict(text, where, "inconclusive", f"Some frozen arms end within the spread of full fine-tuning ({tail}).")


@claim("text-forgotten")
def text_forgotten(ev: Evidence) -> Verdict:
    text = "Image training destroys the LM's world knowledge and in-context learning after a little training"
    where = "Table 1 (after 5B tokens)"
    if len(ev.probes) < 2:
        return Verdict(text, where, "inconclusive", "No checkpoint was probed beside the base LM.")
    base, last = ev.probes[0], ev.probes[-1]
    ratio = last["perplexity"] / base["perplexity"]
    figures = (f"held-out text perplexity {base['perplexity']:.4g} for the base LM, {last['perplexity']:.4g} after "
               f"{last['tokens']:,} tokens (x{ratio:.3g}); French {base['translation']} -> {last['translation']}; "
               f"knowledge completions equal to the base LM's {last['knowledge_same']}")
    if ratio >= 2 and last["translation_hits"] <= base["translation_hits"]:
        return Verdict(text, where, "agrees", f"Text ability fell ({figures}).")
    if ratio <= 1.1:
        return Verdict(text, where, "disagrees", f"Text perplexity held within 10% ({figures}).")
    return Verdict(text, where, "inconclusive", f"Text perplexity rose by less than 2x ({figures}).")
