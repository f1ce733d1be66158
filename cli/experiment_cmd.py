"""``tokalign experiment``: one of the paper's comparisons, every arm an ordinary generator run in one folder.

Torch-free at import: the study and preset names come from :mod:`tokalign.generate.experiment`; the library is
imported inside the command.
"""

from __future__ import annotations

from pathlib import Path

import click

from tokalign.align.defaults import DEFAULT_LM
from tokalign.generate.experiment.config import PRESETS, ExperimentConfig
from tokalign.generate.experiment.studies import STUDIES


@click.command("experiment")
@click.argument("study", type=click.Choice(list(STUDIES)))
@click.option("--corpus", type=click.Path(path_type=Path), required=True, help="Corpus folder (`tokalign tokenize` or `demo-corpus`).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Study folder to write (or continue with --resume).")
@click.option("--lm", default=DEFAULT_LM, show_default=True, help="Base LM of the pretrained arms (what `fit --lm` takes).")
@click.option("--preset", type=click.Choice(list(PRESETS)), default="small", show_default=True, help="small: minutes per arm on a CPU; paper: the paper's setting, for GPUs.")
@click.option("--init-from", type=click.Path(path_type=Path), default=None, help="The aligned arm's `tokalign export --to generator-init` file [default: fit and export one into OUT/align].")
@click.option("--arms", default="", help="Comma-separated subset of the study's arms [default: all].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every arm (init, split, data order, dropout).")
@click.option("--resume", is_flag=True, help="Continue the study in --out: finished arms are kept, an interrupted one resumes.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="Cache for derived LM weights [default: $TOKALIGN_CACHE or ~/.cache/tokalign].")
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
def experiment(study, corpus, out, lm, preset, init_from, arms, seed, resume, cache_dir, no_progress) -> None:
    """Run a study of the paper (init: Figures 3-4, freeze: Figure 6, forgetting: Table 1) and write its curves and verdicts."""
    from tokalign.generate.experiment.run import run_study

    config = ExperimentConfig(study=study, corpus=corpus, out=out, preset=PRESETS[preset], lm=lm, init_from=init_from,
                              arms=tuple(a.strip() for a in arms.split(",") if a.strip()), seed=seed, resume=resume,
                              cache_root=cache_dir, progress=not no_progress)
    result = run_study(config)
    for name, status in result.arms.items():
        click.echo(f"arm {name}: {status}")
    for verdict in result.verdicts:
        click.echo(f"{verdict.verdict:>12}: {verdict.claim}")
    click.echo(f"curves: {result.curves}  results: {result.results}")
