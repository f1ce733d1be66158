"""``results.md``: each arm's held-out figures beside what the paper reports, and one verdict per claim.

Pure formatting of what :mod:`tokalign.generate.experiment.run` measured; no model is loaded here.
"""

from __future__ import annotations

import math
from typing import Iterable

from tokalign.generate.experiment.claims import Verdict
from tokalign.generate.experiment.curves import BUCKET_LABEL, Curve
from tokalign.generate.experiment.studies import Arm, Study

#: what the paper reports for the arm that plays each role (study -> arm -> sentence)
PAPER: dict[str, dict[str, str]] = {
    "init": {
        "aligned": "no discernible improvement over random rows (section 3.2)",
        "random-rows": "pretrained LM: loss close to the random init's over 100B tokens (Figure 3)",
        "mean": "pretrained LM: text loss starts far lower, the gap closes soon; image loss = random init's (Figure 4)",
        "scratch": "random init: same image loss as pretrained; FID 12.27 vs 12.21 (section 2.2)",
    },
    "freeze": {
        "all": "full fine-tuning: the lowest loss of the pretrained configurations, equal to random init (Figure 6)",
        "embeddings": "(1) embeddings + output layer only: higher loss than full fine-tuning",
        "embeddings+norms": "(2) = (1) + norms: higher loss than full fine-tuning",
        "embeddings+norms+first-half": "(3) = (2) + first half of the layers: higher loss than full fine-tuning",
        "embeddings+norms+ffn": "(4) = (2) + feed-forward layers: higher loss than full fine-tuning",
        "scratch": "random init: the same loss as the pretrained model, fully trained",
    },
    "forgetting": {"mean": "after 5B tokens world knowledge and in-context learning are entirely gone (Table 1)"},
}


def markdown(study: Study, arms: Iterable[Arm], curves: dict[str, Curve], verdicts: list[Verdict], ema: float,
             context: dict, probes: list[dict]) -> str:
    arms = list(arms)
    lines = [f"# Study `{study.name}`: the paper's {study.figure}", "",
             f"Preset `{context['preset']}`; corpus `{context['corpus']}`; LM `{context['lm']}`; "
             f"{context['steps']} steps of {context['tokens_per_step']:,} tokens per arm; held-out losses in nats, "
             f"smoothed with EMA {ema:g}.", "", f"![held-out loss curves]({context['curves']})", "",
             "## Arms", "", *_arm_table(study, arms, curves, ema), ""]
    if probes:
        lines += ["## Forgetting along the run", "", *_probe_table(probes), ""]
    lines += ["## The paper's claims", ""]
    for v in verdicts:
        lines.append(f"- **{v.claim}** ({v.where}): **{v.verdict}**. {v.sentence}")
    return "\n".join(lines) + "\n"


def _arm_table(study: Study, arms: list[Arm], curves: dict[str, Curve], ema: float) -> list[str]:
    names = [BUCKET_LABEL.get(b, b) for b in study.buckets]
    head = ["arm", "overrides", *(f"{n} step 0" for n in names), *(f"{n} final (EMA)" for n in names),
            "evaluations", "paper"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (2 * len(names) + 1) + "---|"]
    for arm in arms:
        curve = curves.get(arm.name)
        overrides = ", ".join(f"{k}={v}" for k, v in {**arm.model, **arm.data}.items()) or "-"
        if curve is None:
            cells = ["not run"] * (2 * len(names) + 1)
        else:
            cells = [*(_num(curve.first(b)) for b in study.buckets), *(_num(curve.final(b, ema)) for b in study.buckets),
                     str(len(curve.tokens))]
        rows.append("| " + " | ".join([f"`{arm.name}`", overrides, *cells, PAPER.get(study.name, {}).get(arm.name, "")])
                    + " |")
    return rows


def _probe_table(probes: list[dict]) -> list[str]:
    rows = ["| model | tokens seen | held-out text perplexity | mass on image ids | French exact match | "
            "knowledge completions = base LM's | \"Simply put, the theory of relativity states that\" |",
            "|---|---:|---:|---:|---:|---:|---|"]
    for p in probes:
        rows.append(f"| {p['name']} | {p['tokens']:,} | {_num(p['perplexity'], 2)} | {p['image_mass']:.4f} | "
                    f"{p['translation']} | {p['knowledge_same']} | {_cell(p['knowledge_example'])} |")
    rows.append("| paper, after 5B tokens | 5,000,000,000 | - | - | cheese => \"I love cheese\" | knowledge gone | "
                "\"iles must be able to see the invisible.\" |")
    return rows


def _num(value: float, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:,.{digits}f}" if abs(value) < 1e6 else f"{value:.3g}"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")[:60]
