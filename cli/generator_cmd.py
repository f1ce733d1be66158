"""``tokalign generator``: the click group of the second stage, and its ``train`` command.

Other commands (``sample``, ``probe``) add themselves to :data:`generator` from their own modules. Torch-free at
import: defaults and choices come from :mod:`tokalign.generate.config`; the library is imported inside the command.
"""

from __future__ import annotations

from pathlib import Path

import click

from tokalign.cli.options import default_of
from tokalign.generate.config import (DEVICES, FREEZE_PRESETS, INIT_MODES, PRECISIONS, REPORT_TO, DataConfig,
                                      GeneratorTrainConfig, ModelConfig, OptimConfig, RunConfig)
from tokalign.generate.model_folder import MODES


@click.group()
def generator() -> None:
    """Train, sample and probe an auto-regressive text-to-image generator (paper, sections 2 and 3)."""


def _d(cls, name: str):
    return default_of(cls, name)


@generator.command()
@click.option("--corpus", type=click.Path(path_type=Path), required=True, help="Corpus folder (`tokalign tokenize` or `demo-corpus`).")
@click.option("--run", "run_dir", type=click.Path(path_type=Path), required=True, help="Run folder to write (or continue with --resume).")
@click.option("--lm", default=_d(ModelConfig, "lm"), show_default=True, help="Base LM: the default alias, an HF id, a folder or a .gguf file (what `fit --lm` takes).")
@click.option("--init", "init", type=click.Choice(INIT_MODES), required=True, help="How the new rows (or, for scratch, all weights) start.")
@click.option("--init-from", type=click.Path(path_type=Path), default=None, help="--init aligned: the `tokalign export --to generator-init` file.")
@click.option("--train-only", type=click.Choice(FREEZE_PRESETS), default=_d(ModelConfig, "train_only"), show_default=True, help="Freeze preset: what learns (paper, section 3.1).")
@click.option("--untie", is_flag=True, help="Give a tied LM its own output head (the paper's open_lm is untied).")
@click.option("--num-layers", type=int, default=None, help="Keep only the first N decoder layers (reduced runs) [default: all].")
@click.option("--mode", type=click.Choice(MODES), default=_d(DataConfig, "mode"), show_default=True, help="image-only drops the caption (unconditional runs).")
@click.option("--seq-len", type=int, default=_d(DataConfig, "seq_len"), show_default=True, help="Tokens per sequence (captions are truncated to fit).")
@click.option("--caption-dropout", type=float, default=_d(DataConfig, "caption_dropout"), show_default=True, help="Share of training captions replaced by an empty text segment (for guidance).")
@click.option("--holdout", type=int, default=_d(DataConfig, "holdout"), show_default=True, help="Pairs held out for evaluation.")
@click.option("--steps", type=int, default=_d(OptimConfig, "steps"), show_default=True, help="Optimizer steps.")
@click.option("--batch-tokens", type=int, default=_d(OptimConfig, "batch_tokens"), show_default=True, help="Global batch in tokens (batch-tokens // seq-len sequences per step).")
@click.option("--micro-batch", type=int, default=_d(OptimConfig, "micro_batch"), show_default=True, help="Sequences per forward pass per process (gradient accumulation beyond it).")
@click.option("--lr", type=float, default=_d(OptimConfig, "lr"), show_default=True, help="Peak learning rate (AdamW).")
@click.option("--warmup-steps", type=int, default=_d(OptimConfig, "warmup_steps"), show_default=True, help="Linear warm-up steps before the cosine decay.")
@click.option("--min-lr-ratio", type=float, default=_d(OptimConfig, "min_lr_ratio"), show_default=True, help="Cosine floor as a fraction of the peak.")
@click.option("--weight-decay", type=float, default=_d(OptimConfig, "weight_decay"), show_default=True, help="AdamW weight decay (matrices only).")
@click.option("--grad-clip", type=float, default=_d(OptimConfig, "grad_clip"), show_default=True, help="Max gradient norm (0: no clipping).")
@click.option("--seed", type=int, default=_d(RunConfig, "seed"), show_default=True, help="Seed of the init, split, data order and dropout.")
@click.option("--device", type=click.Choice(DEVICES), default=_d(RunConfig, "device"), show_default=True, help="Where to train (several processes: `accelerate launch`).")
@click.option("--precision", type=click.Choice(PRECISIONS), default=_d(RunConfig, "precision"), show_default=True, help="auto: bf16 autocast on GPU, fp32 on CPU.")
@click.option("--compile", "compile_", is_flag=True, help="torch.compile the model.")
@click.option("--report-to", type=click.Choice(REPORT_TO), default=_d(RunConfig, "report_to"), show_default=True, help="Also log to this Accelerate tracker (e.g. tensorboard, when installed).")
@click.option("--log-every", type=int, default=_d(RunConfig, "log_every"), show_default=True, help="Steps between metrics.jsonl rows.")
@click.option("--eval-every", type=int, default=_d(RunConfig, "eval_every"), show_default=True, help="Steps between held-out evaluations.")
@click.option("--eval-batches", type=int, default=_d(RunConfig, "eval_batches"), show_default=True, help="Held-out micro-batches per evaluation (0: all).")
@click.option("--checkpoint-every", type=int, default=_d(RunConfig, "checkpoint_every"), show_default=True, help="Steps between checkpoints.")
@click.option("--keep-checkpoints", type=int, default=_d(RunConfig, "keep_checkpoints"), show_default=True, help="How many recent checkpoints to keep.")
@click.option("--resume", is_flag=True, help="Continue the run in --run from its last checkpoint.")
@click.option("--stop-after", type=int, default=None, help="End this invocation after N steps (checkpointed); continue with --resume.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="Cache for derived LM weights [default: $TOKALIGN_CACHE or ~/.cache/tokalign].")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def train(corpus, run_dir, lm, init, init_from, train_only, untie, num_layers, mode, seq_len, caption_dropout, holdout,
          steps, batch_tokens, micro_batch, lr, warmup_steps, min_lr_ratio, weight_decay, grad_clip, seed, device,
          precision, compile_, report_to, log_every, eval_every, eval_batches, checkpoint_every, keep_checkpoints,
          resume, stop_after, cache_dir, no_progress) -> None:
    """Train the expanded-vocabulary generator on caption -> image sequences."""
    config = GeneratorTrainConfig(
        model=ModelConfig(init=init, lm=lm, init_from=init_from, train_only=train_only, untie=untie,
                          num_layers=num_layers, cache_root=cache_dir),
        data=DataConfig(corpus=corpus, mode=mode, seq_len=seq_len, caption_dropout=caption_dropout, holdout=holdout),
        optim=OptimConfig(steps=steps, batch_tokens=batch_tokens, micro_batch=micro_batch, lr=lr,
                          warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio, weight_decay=weight_decay,
                          grad_clip=grad_clip),
        run=RunConfig(run_dir=run_dir, seed=seed, device=device, precision=precision, compile=compile_,
                      report_to=report_to, log_every=log_every, eval_every=eval_every, eval_batches=eval_batches,
                      checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints, resume=resume,
                      stop_after=stop_after, progress=not no_progress))
    from tokalign.generate.train.loop import train as run_train

    result = run_train(config)
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
    click.echo(f"{result.tokens_per_s:,.0f} tokens/s")


def _ppl(figures: dict, bucket: str) -> str:
    return _fmt(figures.get(f"{bucket}_ppl"))


def _fmt(value) -> str:
    if value is None or value != value:
        return "n/a"
    return f"{value:,.2f}" if value < 1e6 else f"{value:.3g}"
