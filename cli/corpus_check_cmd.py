"""``tokalign corpus check DIR``: validate a corpus folder end to end."""

from __future__ import annotations

from pathlib import Path

import click


@click.group()
def corpus() -> None:
    """Inspect corpus folders."""


@corpus.command()
@click.argument("folder", type=click.Path(path_type=Path))
def check(folder: Path) -> None:
    """Check a corpus: manifest, shard sizes, caption offsets, .jsonl line counts, token ranges."""
    from tokalign.align.formats.corpus_check import check_corpus

    counts = check_corpus(folder)
    click.echo(f"corpus {counts['root']}: {counts['items']} items in {counts['shards']} shards, "
               f"{counts['caption_tokens']} caption tokens, codebook {counts['codebook_size']}: OK")
