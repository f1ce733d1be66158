"""``tokalign tokenize`` and ``tokalign decode``."""

from __future__ import annotations

from pathlib import Path

import click

from tokalign.align.image_tokenizers.registry import KINDS
from tokalign.align.sources.spec import FORMATS, SourceSpec
from tokalign.align.tokenize.config import DTYPES, TokenizeConfig
from tokalign.cli.options import config_option, default_of


def _o(name: str, **kwargs):
    return config_option(TokenizeConfig, name, **kwargs)


@click.command()
@click.option("--input", "input_", required=True, help="Tar shard(s) or brace pattern, an image folder, a parquet file/folder, a saved HF dataset, or a .npy of tokens.")
@click.option("--input-format", type=click.Choice(FORMATS), default=None, help="Input format [default: detected].")
@_o("out")
@_o("image_tokenizer", type=click.Choice(KINDS))
@_o("image_tokenizer_path")
@_o("fit_codebook")
@_o("codebook_size")
@_o("codebook_images")
@_o("grid")
@_o("min_side")
@click.option("--captions", default=None, help="folder/npy inputs: the captions file [default: captions.jsonl|csv, metadata.jsonl|csv].")
@click.option("--image-column", default=None, help="parquet/hf: image column [default: detected].")
@click.option("--caption-column", default=None, help="parquet/hf: caption column [default: detected].")
@click.option("--split", default=None, help="hf DatasetDict: the split [default: train].")
@click.option("--shard-size", type=int, default=default_of(SourceSpec, "part_size"), show_default=True, help="Items per output shard for folder/parquet/hf/npy inputs (a tar is one shard).")
@_o("lm")
@_o("batch_size")
@_o("workers", default=None, show_default=False)  # None: the config's default_factory
@_o("device")
@_o("dtype", type=click.Choice(DTYPES))
@_o("resume")
@_o("force")
@_o("stop_after_parts")
@_o("seed")
@_o("kmeans_iterations")
@_o("cache_root", dest="cache_dir")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def tokenize(input_, input_format, out, image_tokenizer, image_tokenizer_path, fit_codebook, codebook_size, codebook_images,
             grid, min_side, captions, image_column, caption_column, split, shard_size, lm, batch_size, workers, device,
             dtype, resume, force, stop_after_parts, seed, kmeans_iterations, cache_dir, no_progress) -> None:
    """Turn image-caption data into a corpus that `tokalign fit` reads."""
    from tokalign.align.tokenize.pipeline import tokenize_corpus

    source = SourceSpec(input=input_, format=input_format, image_column=image_column, caption_column=caption_column,
                        captions_file=captions, split=split, part_size=shard_size,
                        tokens=image_tokenizer == "pretokenized")
    optional = {"workers": workers} if workers is not None else {}  # else the config's default_factory
    config = TokenizeConfig(source=source, out=out, image_tokenizer=image_tokenizer,
                            image_tokenizer_path=image_tokenizer_path, fit_codebook=fit_codebook,
                            codebook_size=codebook_size, codebook_images=codebook_images, grid=grid, min_side=min_side,
                            lm=lm, cache_root=cache_dir, batch_size=batch_size,
                            device=device, dtype=dtype, resume=resume, force=force,
                            stop_after_parts=stop_after_parts, seed=seed, kmeans_iterations=kmeans_iterations,
                            progress=not no_progress, **optional)
    result = tokenize_corpus(config)
    if not result.complete:
        click.echo(f"stopped after {result.parts_done} more shards; continue with `tokalign tokenize --resume` and the same options")
        return
    manifest = result.manifest
    skipped = ", ".join(f"{k} {v}" for k, v in manifest.get("skipped", {}).items()) or "none"
    adjusted = ", ".join(f"{k} {v}" for k, v in manifest.get("adjusted", {}).items()) or "none"
    click.echo(f"corpus: {out}  ({manifest['items']} items in {len(manifest['shards'])} shards)")
    click.echo(f"skipped: {skipped}")
    click.echo(f"adjusted (kept): {adjusted}")
    if not manifest["items"] and manifest.get("skipped"):
        click.echo(f"every item was skipped; first: {_first_skips(Path(out))} (all in {Path(out) / 'skipped.jsonl'})")


def _first_skips(out: Path) -> str:
    import json

    from tokalign.align.tokenize.pipeline import SHOWN_SKIPS, skip_summary

    rows = []
    try:
        with open(out / "skipped.jsonl", encoding="utf-8") as handle:
            for line in handle:
                rows.append(json.loads(line))
                if len(rows) == SHOWN_SKIPS:
                    break
    except (OSError, ValueError):
        pass
    return skip_summary(rows)


def _indices(values: tuple[str, ...]) -> tuple[int, ...]:
    out: list[int] = []
    for value in values:
        try:
            if ":" in value:
                a, b = value.split(":", 1)
                out.extend(range(int(a), int(b)))
            else:
                out.append(int(value))
        except ValueError:
            raise click.BadParameter(f"{value!r} is not an index or a range A:B", param_hint="--index") from None
    return tuple(out)


@click.command()
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the PNG images.")
@click.option("--corpus", type=click.Path(path_type=Path), default=None, help="Corpus whose rows (--index) to decode, or whose tokenizer decodes --tokens.")
@click.option("--index", "index", multiple=True, help="Corpus row to decode (repeatable; A:B for a range).")
@click.option("--tokens", "tokens_file", type=click.Path(path_type=Path), default=None, help="A .npy (L,), (N, L), (N, h, w) or a .safetensors with image_tokens.")
@click.option("--image-tokenizer", type=click.Choice(("kmeans", "movq")), default=None, help="Tokenizer kind, for --tokens without --corpus.")
@click.option("--image-tokenizer-path", default=None, help="Its weights (or, with --corpus, where the corpus's tokenizer moved to).")
@click.option("--device", default=None, help="Decode on this device [default: cuda when available].")
def decode(out, corpus, index, tokens_file, image_tokenizer, image_tokenizer_path, device) -> None:
    """Turn image tokens back into PNG images."""
    from tokalign.align.tokenize.decode import DecodeConfig, decode_tokens

    config = DecodeConfig(out=out, corpus=corpus, indices=_indices(index), tokens_file=tokens_file,
                          image_tokenizer=image_tokenizer, image_tokenizer_path=image_tokenizer_path, device=device)
    paths = decode_tokens(config)
    click.echo(f"wrote {len(paths)} images to {out}")
