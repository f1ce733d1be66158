"""``tokalign generator probe``: what image training did to the LM and its image rows (attached to ``generator``)."""

from __future__ import annotations

import click

from tokalign.cli.options import config_option
from tokalign.generate.probe.config import DEVICES, ProbeConfig


def _o(name: str, **kwargs):
    return config_option(ProbeConfig, name, **kwargs)


@click.command("probe")
@_o("model")
@_o("base")
@_o("out")
@_o("init_from")
@_o("clip_model")
@_o("clip_samples")
@_o("cfg_scale")
@_o("text_file")
@_o("max_text_tokens")
@_o("window")
@_o("max_new_tokens")
@_o("k")
@_o("image_rows")
@_o("seed")
@_o("device", type=click.Choice(DEVICES))
@_o("cache_root", dest="cache_dir")
@click.option("--no-progress", is_flag=True, help="Hide the sampler's progress bar.")
def probe(model, base, out, init_from, clip_model, clip_samples, cfg_scale, text_file, max_text_tokens, window,
          max_new_tokens, k, image_rows, seed, device, cache_dir, no_progress) -> None:
    """Language (held-out perplexity, prompts, French) and image-row retention of a generator beside its base LM."""
    from tokalign.generate.probe.run import run_probe

    config = ProbeConfig(model=model, base=base, out=out, init_from=init_from, clip_model=clip_model,
                         clip_samples=clip_samples, cfg_scale=cfg_scale, text_file=text_file,
                         max_text_tokens=max_text_tokens, window=window, max_new_tokens=max_new_tokens, k=k,
                         image_rows=image_rows, seed=seed, device=device, cache_root=cache_dir,
                         progress=not no_progress)
    result = run_probe(config)
    for line in summary_lines(result.report):
        click.echo(line)
    click.echo(f"report: {result.markdown_path}  data: {result.json_path}")


def summary_lines(report: dict) -> list[str]:
    lang = report["language"]
    b, g = lang["base"], lang["generator"]
    mass = g["perplexity"].get("mass_off_text", {}).get("total")
    lines = [f"held-out perplexity  base {b['perplexity']['perplexity']:,.2f}  generator {g['perplexity']['perplexity']:,.2f}"
             f"  (mass off text ids {mass:.4f}; {report['text']['tokens']} tokens of {report['text']['source'].split(',')[0]})",
             f"French exact match   base {b['translation']['hits']}/{len(b['translation']['items'])}  "
             f"generator {g['translation']['hits']}/{len(g['translation']['items'])}"]
    rows = report["image_rows"]
    if "skipped" in rows:
        lines.append(f"image rows: skipped ({rows['skipped']})")
    else:
        lines.append(f"image rows ({rows['rows']}): cosine to init {rows['cosine']['mean']:.3f}, top-{rows['k']} overlap "
                     f"{rows['overlap']['mean']:.3f} (chance {rows['chance']['overlap']:.4f}), kept any neighbour "
                     f"{rows['kept_any_neighbour']:.3f} (chance {rows['chance']['kept_any_neighbour']:.4f})")
    quality = report.get("image_quality")
    if quality:
        lines.append(f"CLIP score {quality['clip_score']:.2f} ({quality['pairs']} captions, {quality['clip_model']['name']})")
    return lines
