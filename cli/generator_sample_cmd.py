"""``tokalign generator sample``: images from a trained generator (attached to the ``generator`` group)."""

from __future__ import annotations

from pathlib import Path

import click

from tokalign.cli.options import default_of
from tokalign.generate.sample.config import DEVICES, DTYPES, SampleConfig


def _d(name: str):
    return default_of(SampleConfig, name)


@click.command("sample")
@click.option("--model", type=click.Path(path_type=Path), required=True, help="Generator folder `tokalign generator train` wrote.")
@click.option("--prompt", "prompt", multiple=True, help="A caption to draw (repeatable; \"\" = unconditional).")
@click.option("--prompts", "prompts_file", type=click.Path(path_type=Path), default=None, help="A file of prompts: one per line, or .jsonl with \"prompt\".")
@click.option("-n", "n", type=int, default=_d("n"), show_default=True, help="Images per prompt.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the PNGs, grid.png, samples.safetensors and samples.json.")
@click.option("--temperature", type=float, default=_d("temperature"), show_default=True, help="Softmax temperature (> 0).")
@click.option("--top-k", type=int, default=_d("top_k"), show_default=True, help="Keep the k most likely image ids (0 = off).")
@click.option("--top-p", type=float, default=_d("top_p"), show_default=True, help="Nucleus sampling mass in (0, 1] (1 = off).")
@click.option("--cfg-scale", type=float, default=_d("cfg_scale"), show_default=True, help="Classifier-free guidance scale on raw logits, u + s (c - u) (1 = off).")
@click.option("--seed", type=int, default=_d("seed"), show_default=True, help="Seed; image (prompt p, sample s) is the same in any batch.")
@click.option("--batch-size", type=int, default=_d("batch_size"), show_default=True, help="Images per batch (x2 rows with guidance).")
@click.option("--device", default=_d("device"), show_default=True, help=f"{', '.join(DEVICES)} or cuda:N.")
@click.option("--dtype", type=click.Choice(DTYPES), default=_d("dtype"), show_default=True, help="Model precision (auto: bfloat16 on GPU, float32 on CPU).")
@click.option("--corpus", type=click.Path(path_type=Path), default=None, help="The generator's corpus, if it moved (its image tokenizer decodes the samples).")
@click.option("--image-tokenizer-path", default=None, help="Where the corpus's image tokenizer weights moved to.")
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
