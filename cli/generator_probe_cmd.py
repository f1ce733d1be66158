"""``tokalign generator probe``: what image training did to the LM and its image rows (attached to ``generator``)."""

from __future__ import annotations

from pathlib import Path

import click

from tokalign.cli.options import default_of
from tokalign.generate.probe.config import DEVICES, ProbeConfig


def _d(name: str):
    return default_of(ProbeConfig, name)


@click.command("probe")
@click.option("--model", type=click.Path(path_type=Path), required=True, help="Generator folder `tokalign generator train` wrote.")
@click.option("--base", default=None, help="The LM to compare with (what `fit --lm` takes) [default: the one the generator started from].")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Folder for probe.json and probe.md [default: MODEL/probe].")
@click.option("--init-from", type=click.Path(path_type=Path), default=None, help="The generator-init file the image rows started from, if the record's is gone or its init cannot be rebuilt.")
@click.option("--clip-model", type=click.Path(path_type=Path), default=None, help="Local open_clip folder (open_clip_config.json + safetensors): CLIP score of samples of held-out captions.")
@click.option("--clip-samples", type=int, default=_d("clip_samples"), show_default=True, help="Held-out captions to sample for the CLIP score.")
@click.option("--cfg-scale", type=float, default=_d("cfg_scale"), show_default=True, help="Guidance of the CLIP samples (1 = off).")
@click.option("--text-file", type=click.Path(path_type=Path), default=None, help="Held-out English text to score instead of the packaged one (UTF-8).")
@click.option("--max-text-tokens", type=int, default=_d("max_text_tokens"), show_default=True, help="Score the first N tokens of the held-out text.")
@click.option("--window", type=int, default=_d("window"), show_default=True, help="Perplexity window in tokens.")
@click.option("--max-new-tokens", type=int, default=_d("max_new_tokens"), show_default=True, help="Greedy completion length of the knowledge prompts.")
@click.option("-k", "k", type=int, default=_d("k"), show_default=True, help="Nearest text tokens per image row.")
@click.option("--image-rows", type=int, default=_d("image_rows"), show_default=True, help="Probe N evenly spaced image rows (0 = all).")
@click.option("--seed", type=int, default=_d("seed"), show_default=True, help="Seed of the CLIP samples.")
@click.option("--device", type=click.Choice(DEVICES), default=_d("device"), show_default=True, help="Where the models run.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="Cache of the base LM's figures and frozen rows [default: $TOKALIGN_CACHE or ~/.cache/tokalign].")
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
