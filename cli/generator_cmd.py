"""``tokalign generator``: the click group of the second stage, and its ``train`` command.

Other commands (``sample``, ``probe``) add themselves to :data:`generator` from their own modules. Torch-free at
import: defaults and choices come from :mod:`tokalign.generate.config`; the library is imported inside the command.
"""

from __future__ import annotations

import click

from tokalign.cli.options import config_option
from tokalign.generate.config import (COMPILE, DEVICES, FREEZE_PRESETS, HEADS, INIT_MODES, MARKERS, PRECISIONS,
                                      REPORT_TO, DataConfig, GeneratorTrainConfig, ModelConfig, OptimConfig, RunConfig)
from tokalign.generate.model_folder import MODES


@click.group()
def generator() -> None:
    """Train, sample and probe an auto-regressive text-to-image generator (paper, sections 2 and 3)."""


_o = config_option


@generator.command()
@_o(DataConfig, "corpus")
@_o(RunConfig, "run_dir")
@_o(ModelConfig, "lm")
@_o(ModelConfig, "init", type=click.Choice(INIT_MODES))
@_o(ModelConfig, "init_from")
@_o(ModelConfig, "train_only", type=click.Choice(FREEZE_PRESETS))
@_o(ModelConfig, "untie")
@_o(ModelConfig, "head", type=click.Choice(HEADS))
@_o(ModelConfig, "marker", type=click.Choice(MARKERS))
@_o(ModelConfig, "num_layers")
@_o(DataConfig, "mode", type=click.Choice(MODES))
@_o(DataConfig, "seq_len")
@_o(DataConfig, "caption_dropout")
@_o(DataConfig, "holdout")
@_o(OptimConfig, "steps")
@_o(OptimConfig, "batch_tokens")
@_o(OptimConfig, "micro_batch")
@_o(OptimConfig, "lr")
@_o(OptimConfig, "warmup_steps")
@_o(OptimConfig, "min_lr_ratio")
@_o(OptimConfig, "weight_decay")
@_o(OptimConfig, "grad_clip")
@_o(RunConfig, "seed")
@_o(RunConfig, "device", type=click.Choice(DEVICES))
@_o(RunConfig, "precision", type=click.Choice(PRECISIONS))
@_o(RunConfig, "compile", dest="compile_", type=click.Choice(COMPILE))
@_o(RunConfig, "report_to", type=click.Choice(REPORT_TO))
@_o(RunConfig, "log_every")
@_o(RunConfig, "eval_every")
@_o(RunConfig, "eval_batches")
@_o(RunConfig, "checkpoint_every")
@_o(RunConfig, "keep_checkpoints")
@_o(RunConfig, "resume")
@_o(RunConfig, "stop_after")
@_o(ModelConfig, "cache_root", dest="cache_dir")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def train(corpus, run_dir, lm, init, init_from, train_only, untie, head, marker, num_layers, mode, seq_len,
          caption_dropout, holdout,
          steps, batch_tokens, micro_batch, lr, warmup_steps, min_lr_ratio, weight_decay, grad_clip, seed, device,
          precision, compile_, report_to, log_every, eval_every, eval_batches, checkpoint_every, keep_checkpoints,
          resume, stop_after, cache_dir, no_progress) -> None:
    """Train the expanded-vocabulary generator on caption -> image sequences."""
    config = GeneratorTrainConfig(
        model=ModelConfig(init=init, lm=lm, init_from=init_from, train_only=train_only, untie=untie, head=head,
                          marker=marker, num_layers=num_layers, cache_root=cache_dir),
        data=DataConfig(corpus=corpus, mode=mode, seq_len=seq_len, caption_dropout=caption_dropout, holdout=holdout),
        optim=OptimConfig(steps=steps, batch_tokens=batch_tokens, micro_batch=micro_batch, lr=lr,
                          warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio, weight_decay=weight_decay,
                          grad_clip=grad_clip),
        run=RunConfig(run_dir=run_dir, seed=seed, device=device, precision=precision, compile=compile_,
                      report_to=report_to, log_every=log_every, eval_every=eval_every, eval_batches=eval_batches,
                      checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints, resume=resume,
                      stop_after=stop_after, progress=not no_progress))
    from tokalign.align.training.accelerator import end_processes
    from tokalign.generate.train.loop import train as run_train

    try:
        result = run_train(config)
    finally:
        end_processes()
    if not result.main_process:
        return
    if not result.finished:
        click.echo(f"stopped at step {result.steps}/{steps}; continue with `tokalign generator train --resume` and "
                   "the same options")
        return
    click.echo(f"model: {result.model_dir}")
    for name, figures in (("step 0", result.step0), (f"step {result.steps}", result.final)):
        if figures:
            click.echo(f"{name:>10}: held-out perplexity  text {_ppl(figures, 'text')}   image {_ppl(figures, 'image')}"
                       f"   structure {_ppl(figures, 'structure')}   all {_fmt(figures.get('ppl'))}")
    image_loss = result.final.get("image_loss")
    if image_loss is not None and image_loss == image_loss:  # not NaN: the held-out set had image tokens
        from tokalign.generate.sequences.unigram import image_token_entropy

        click.echo(f"held-out image loss {image_loss:.2f} nats (unigram entropy of the corpus's image "
                   f"tokens: {image_token_entropy(corpus):.2f} nats)")
    click.echo(f"{result.tokens_per_s:,.0f} tokens/s")


def _ppl(figures: dict, bucket: str) -> str:
    return _fmt(figures.get(f"{bucket}_ppl"))


def _fmt(value) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:,.2f}" if value < 1e6 else f"{value:.3g}"
