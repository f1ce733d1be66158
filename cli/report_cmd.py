"""``tokalign report``."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--run", "run_dir", type=click.Path(path_type=Path), required=True, help="Run folder written by `tokalign fit`.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Report folder [default: RUN/report].")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Nearest text tokens kept per image token.")
@click.option("--corpus", type=click.Path(path_type=Path), default=None, help="Corpus of the run, if it moved since the fit.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def report(run_dir, out, k, corpus, no_progress) -> None:
    """Write a report on an alignment: neighbours, void share, usage, retrieval, plots."""
    from tokalign.probes.report import ReportConfig, write_report

    config = ReportConfig(run=run_dir, out=out, k=k, corpus=corpus, progress=not no_progress)
    figures = write_report(config)
    void = figures["void"]
    click.echo(f"report: {config.folder}")
    click.echo(f"top-1 similarity median {figures['top1_similarity']['median']:.3f}; void top-1 neighbours "
               f"{void['top1_share']:.1%} (vocabulary {void['vocabulary_share']:.1%})")
    if figures.get("retrieval"):
        r = figures["retrieval"]
        click.echo(f"held-out image->text R@1 {r['i2t']['R@1']:.3f}, text->image R@1 {r['t2i']['R@1']:.3f} "
                   f"(chance {r['chance']['R@1']:.4f})")
