"""``tokalign neighbors`` and ``tokalign export``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from tokalign.align.fit.export import RESCALE_MODES, SPECIAL_MODES, ExportConfig
from tokalign.cli.options import config_option

_RUN_HELP = "Run folder written by `tokalign fit`."


@click.command()
@click.option("--run", "run_dir", type=click.Path(path_type=Path), required=True, help=_RUN_HELP)
@click.option("--image-token", type=int, default=None, help="Image token id: list its nearest text tokens.")
@click.option("--text-token", default=None, help="A text token as text, e.g. ' red' (must be one token of the LM): list its nearest image tokens.")
@click.option("--text-id", type=int, default=None, help="A text token id: list its nearest image tokens.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Neighbours to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option("--show", type=click.Path(path_type=Path), default=None,
              help="Write a PNG of the image tokens' patches (the neighbours, or the queried token); needs the run's corpus.")
def neighbors(run_dir, image_token, text_token, text_id, k, as_json, show) -> None:
    """Nearest text tokens of an image token, or nearest image tokens of a text token (cosine, exact)."""
    from tokalign.probes.neighbors import NeighborsQuery, find_neighbors

    result = find_neighbors(NeighborsQuery(run=run_dir, image_token=image_token, text_token=text_token,
                                           text_id=text_id, k=k, show=show))
    if as_json:
        click.echo(json.dumps(result.to_json(), ensure_ascii=False, indent=2))
        return
    for line in format_neighbors(result):
        click.echo(line)


def format_neighbors(result) -> list[str]:
    """The neighbours as an aligned text table."""
    from tokalign.probes.neighbors import IMAGE_TO_TEXT

    if result.direction == IMAGE_TO_TEXT:
        head = f"image token {result.query.id} -> {len(result.neighbors)} nearest of {result.searched:,} text tokens"
        rows = [f"{n.rank:>4}  {n.token.id:>7}  {n.score:>7.4f}  {n.token.display}" for n in result.neighbors]
        columns = f"{'rank':>4}  {'id':>7}  {'cosine':>7}  token"
    else:
        head = (f"text token {result.query.id} {result.query.display} -> {len(result.neighbors)} nearest of "
                f"{result.searched:,} image tokens")
        rows = [f"{n.rank:>4}  {n.token.id:>7}  {n.score:>7.4f}" for n in result.neighbors]
        columns = f"{'rank':>4}  {'id':>7}  {'cosine':>7}"
    lines = [f"{head} (run {result.run}, exact search on {result.device})", columns, *rows]
    if result.show:
        lines.append(f"patches: {result.show}")
    return lines


@click.command()
@config_option(ExportConfig, "run", dest="run_dir")
@config_option(ExportConfig, "target", required=True, default=None, show_default=False)  # say it explicitly
@config_option(ExportConfig, "out")
@config_option(ExportConfig, "rescale", type=click.Choice(RESCALE_MODES))
@config_option(ExportConfig, "special", type=click.Choice(SPECIAL_MODES))
@config_option(ExportConfig, "seed")
@config_option(ExportConfig, "force")
def export(run_dir, target, out, rescale, special, seed, force) -> None:
    """Export a fitted run, e.g. the rows that initialize a text-to-image generator (--to generator-init)."""
    from tokalign.align.fit.export import export_run

    result = export_run(ExportConfig(run=run_dir, out=out, target=target, rescale=rescale, special=special, seed=seed,
                                      force=force))
    click.echo(f"wrote {result.out} ({result.target})")
    if result.target == "generator-init":
        for line in format_generator_init(result.metadata):
            click.echo(line)


def format_generator_init(meta: dict) -> list[str]:
    v, k = meta["text_vocab_size"], meta["codebook_size"]
    specials = " ".join(f"{name}={i}" for name, i in meta["special_tokens"].items())
    scale = meta["rescale"]
    factor = f" x{scale['factor']:.4g}" if scale.get("factor") is not None else ""
    return [f"  {k:,} image rows + {len(meta['special_tokens'])} special rows, d_model {meta['d_model']}, "
            f"for LM {meta['lm'].get('name')} (embedding sha256 {meta['lm_embedding_sha256'][:12]})",
            f"  ids: text 0..{v - 1} (the LM's own rows) | image {v}..{v + k - 1} | {specials}",
            f"  image rows rescaled ({scale['method']}){factor}: mean row norm {scale['result_row_norm']['mean']:.4g} "
            f"(LM {scale['lm_row_norm']['mean']:.4g})",
            f"  structure rows: {meta.get('special_init', {}).get('method', 'unrecorded')}"]
