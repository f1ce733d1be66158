"""``tokalign generator sample``: images from a trained generator (attached to the ``generator`` group)."""

from __future__ import annotations

from pathlib import Path

import click

from tokalign.cli.options import config_option
from tokalign.generate.sample.config import DTYPES, SampleConfig


def _o(name: str, **kwargs):
    return config_option(SampleConfig, name, **kwargs)


@click.command("sample")
@_o("model")
@click.option("--prompt", "prompt", multiple=True, help="A caption to draw (repeatable; \"\" = unconditional).")
@click.option("--prompts", "prompts_file", type=click.Path(path_type=Path), default=None, help="A file of prompts: one per line, or .jsonl with \"prompt\".")
@_o("n")
@_o("out")
@_o("temperature")
@_o("top_k")
@_o("top_p")
@_o("cfg_scale")
@_o("seed")
@_o("batch_size")
@_o("device")
@_o("dtype", type=click.Choice(DTYPES))
@_o("corpus")
@_o("image_tokenizer_path")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def sample(model, prompt, prompts_file, n, out, temperature, top_k, top_p, cfg_scale, seed, batch_size, device, dtype,
           corpus, image_tokenizer_path, no_progress) -> None:
    """Sample images from a generator: structure forced, image ids only, optional classifier-free guidance."""
    from tokalign.align.errors import TokalignError
    from tokalign.generate.sample.config import read_prompts_file
    from tokalign.generate.sample.run import sample_images

    if prompt and prompts_file is not None:
        raise TokalignError("pass --prompt or --prompts, not both")
    prompts = read_prompts_file(prompts_file) if prompts_file is not None else tuple(prompt)
    config = SampleConfig(model=model, out=out, prompts=prompts, n=n, temperature=temperature, top_k=top_k,
                          top_p=top_p, cfg_scale=cfg_scale, seed=seed, batch_size=batch_size, device=device,
                          dtype=dtype, corpus=corpus, image_tokenizer_path=image_tokenizer_path,
                          progress=not no_progress)
    result = sample_images(config)
    capture = f", of which warm-up + graph capture {result.capture_seconds:.2f} s" if result.capture_seconds else ""
    click.echo(f"loaded in {result.load_seconds:.2f} s; sampled {result.images} images in {result.sampling_seconds:.2f} s "
               f"({result.images_per_second:.2f} images/s, {result.path} path{capture})")
    if result.grid is not None:
        click.echo(f"grid: {result.grid}")
        click.echo(f"images: {result.out / 'images'}  tokens: {result.out / 'samples.safetensors'}")
    else:
        click.echo(f"tokens: {result.out / 'samples.safetensors'} (not decoded; see the notice above)")
