"""``probe.md``: the probe's report as a short markdown page (tables), rendered from the ``probe.json`` body."""

from __future__ import annotations

from typing import Any


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) < 1e6 else f"{value:.3g}"
    return str(value)


def _cell(text: str, limit: int = 80) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def markdown(report: dict[str, Any]) -> str:
    lang, gen = report["language"], report["generator"]
    b, g = lang["base"]["perplexity"], lang["generator"]["perplexity"]
    mass = g.get("mass_off_text", {})
    bt, gt = lang["base"]["translation"], lang["generator"]["translation"]
    base = report["base"]
    cut = (f", cut to the generator's first {base['layers']} of its {base['lm_layers']} decoder layers as the "
           "generator's init was" if base.get("lm_layers", base["layers"]) != base["layers"] else "")
    lines = [f"# Probe of {report['model']}", "",
             f"Generator: {gen['mode']}, init {gen['init']}, {gen['steps']} steps. Base LM: {base['spec']} "
             f"({base['source']}{cut}). Device: {report['device']}.", "",
             f"Held-out text: {report['text']['source']}; first {report['text']['tokens']} tokens, windows of "
             f"{report['text']['window']}.", "",
             "## Language (paper Table 1)", "",
             "| | base LM | generator |", "|---|---:|---:|",
             f"| perplexity, held-out text ({b['tokens_scored']} tokens scored) | {_f(b['perplexity'])} | {_f(g['perplexity'])} |",
             f"| perplexity renormalized over text ids | — | {_f(g.get('perplexity_text_renormalized'))} |",
             f"| mass on image / structure / padding ids at text positions | — | {_f(mass.get('image'), 4)} / "
             f"{_f(mass.get('structure'), 4)} / {_f(mass.get('padding'), 4)} |",
             f"| English->French exact match (few-shot) | {bt['hits']}/{len(bt['items'])} | {gt['hits']}/{len(gt['items'])} |",
             "", "| prompt | base LM (greedy) | generator (greedy) |", "|---|---|---|"]
    for bc, gc in zip(lang["base"]["completions"], lang["generator"]["completions"]):
        lines.append(f"| {_cell(bc['prompt'])} | {_cell(bc['completion'])} | {_cell(gc['completion'])} |")
    lines += ["", "| word | expected | base LM | generator |", "|---|---|---|---|"]
    for bi, gi in zip(bt["items"], gt["items"]):
        mark = lambda item: ("✓ " if item["hit"] else "") + _cell(item["completion"], 30)  # noqa: E731
        lines.append(f"| {bi['word']} | {bi['expected']} | {mark(bi)} | {mark(gi)} |")
    lines += ["", "## Image rows versus their init (paper, end of section 3.2)", ""]
    rows = report["image_rows"]
    if "skipped" in rows:
        lines.append(f"Skipped: {rows['skipped']}.")
    else:
        c, o, chance = rows["cosine"], rows["overlap"], rows["chance"]
        lines += [f"{rows['rows']} of {rows['of_codebook']} image rows, init: {rows['init']}; top-{rows['k']} nearest of "
                  f"{rows['text_rows']} text tokens (exact cosine, FAISS on {rows['search_device']}).", "",
                  "| | mean | q05 | q25 | median | q75 | q95 |", "|---|---:|---:|---:|---:|---:|---:|",
                  "| cosine(generator row, init row) | " + " | ".join(_f(c[k], 3) for k in ("mean", "q05", "q25", "q50", "q75", "q95")) + " |",
                  f"| top-{rows['k']} neighbour overlap | " + " | ".join(_f(o[k], 3) for k in ("mean", "q05", "q25", "q50", "q75", "q95")) + " |",
                  "", "| | measured | chance |", "|---|---:|---:|",
                  f"| mean overlap | {_f(o['mean'], 4)} | {_f(chance['overlap'], 4)} |",
                  f"| rows that kept any neighbour | {_f(rows['kept_any_neighbour'], 4)} | {_f(chance['kept_any_neighbour'], 4)} |",
                  f"| rows that kept their nearest | {_f(rows['kept_top1'], 4)} | {_f(1 / rows['text_rows'], 4)} |",
                  "", f"Chance: {chance['formula']}."]
    quality = report.get("image_quality")
    lines += ["", "## Image quality", ""]
    if quality is None:
        lines.append("Not measured (pass --clip-model PATH). FID: see the README.")
    else:
        clip = quality["clip_model"]
        held = "held-out" if quality["captions"]["held_out"] else "corpus (not known to be held out)"
        lines.append(f"CLIP score {_f(quality['clip_score'])} over {quality['pairs']} {held} captions, CFG scale "
                     f"{quality['cfg_scale']:g}, with CLIP model {clip['name']} (weights sha256 {clip['weights_sha256'][:12]}; "
                     f"scores of different CLIP models do not compare). Samples: {quality['samples']}.")
    lines += ["", "Seconds: " + ", ".join(f"{k} {v}" for k, v in report["seconds"].items()), ""]
    return "\n".join(lines)
