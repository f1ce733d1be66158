"""The ``aligned`` arm's start when no export is given: a fit and its generator-init export inside the study.

``OUT/align/fit`` is an ordinary fit run (resumed when interrupted) and ``OUT/align/generator_init.safetensors``
its export with the default rescale; an export already there is reused.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tokalign.generate.experiment.config import ExperimentConfig

log = logging.getLogger(__name__)
ALIGN = "align"
EXPORT = "generator_init.safetensors"


def aligned_init(config: ExperimentConfig) -> Path:
    """The generator-init file of ``config``'s corpus and LM, fitted and exported into ``OUT/align`` if missing."""
    folder = config.out / ALIGN
    export = folder / EXPORT
    if export.is_file():
        return export
    from tokalign.align.fit.config import FitConfig
    from tokalign.align.fit.export import ExportConfig, export_generator_init
    from tokalign.align.fit.loop import fit
    from tokalign.align.training.checkpoint import list_checkpoints

    run = folder / "fit"
    p = config.preset
    resume = bool(list_checkpoints(run / "checkpoints"))
    log.info("no --init-from: fitting the alignment into %s (%d steps)", run, p.fit_steps)
    fit(FitConfig(corpus=config.corpus, run_dir=run, lm=config.lm, steps=p.fit_steps, batch_size=p.fit_batch_size,
                  holdout=p.holdout, seed=config.seed, device=p.device, resume=resume, cache_root=config.cache_root,
                  progress=config.progress))
    # the study owns OUT/align: the export target itself, without the file rule that guards user paths
    export_generator_init(ExportConfig(run=run, out=export, seed=config.seed))
    return export
