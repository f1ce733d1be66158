"""``tokalign demo-corpus``: build the embedded default corpus offline."""

from __future__ import annotations

import click

from tokalign.align.tokenize.demo_corpus import DemoCorpusConfig
from tokalign.cli.options import config_option


def _o(name: str, **kwargs):
    return config_option(DemoCorpusConfig, name, **kwargs)


@click.command("demo-corpus")
@_o("out")
@_o("items")
@_o("seed")
@_o("codebook_size")
@_o("patch")
@_o("codebook_images")
@_o("lm")
@_o("cache_root", dest="cache_dir")
@click.option("--if-missing", is_flag=True, help="Do nothing when --out already holds a corpus.")
@click.option("--force", is_flag=True, help="Rebuild even when --out already holds a corpus.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def demo_corpus(out, items, seed, codebook_size, patch, codebook_images, lm, cache_dir, if_missing, force, no_progress) -> None:
    """Generate shape scenes with captions and tokenize them (k-means image tokenizer)."""
    from tokalign.align.formats.corpus import MANIFEST
    from tokalign.align.tokenize.demo_corpus import build_demo_corpus

    config = DemoCorpusConfig(out=out, items=items, seed=seed, codebook_size=codebook_size, patch=patch,
                              codebook_images=codebook_images, lm=lm, cache_root=cache_dir, progress=not no_progress)
    if if_missing and (out / MANIFEST).exists():
        _check_same_settings(config)
        click.echo(f"corpus: {out} (already built)")
        return
    build_demo_corpus(config, overwrite=force)
    click.echo(f"corpus: {out}")


def _check_same_settings(config) -> None:
    """--if-missing keeps an existing corpus only if it was built with these settings (one line otherwise)."""
    from tokalign.align.errors import TokalignError
    from tokalign.align.formats.corpus import read_manifest
    from tokalign.align.tokenize.demo_corpus import settings_differ

    try:
        manifest = read_manifest(config.out)
    except TokalignError:
        return  # not readable as a corpus: the commands that read it say so
    differ = settings_differ(config, manifest) if isinstance(manifest, dict) else []
    if differ:
        raise TokalignError(f"{config.out} holds a corpus built with other settings ({'; '.join(differ)}); pass "
                            "--force to rebuild it, or choose another --out")
