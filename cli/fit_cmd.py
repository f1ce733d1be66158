"""``tokalign fit``."""

from __future__ import annotations

from pathlib import Path

import click

from tokalign.align.fit.config import DEVICES, FitConfig
from tokalign.cli.options import default_of


def _d(name: str):
    return default_of(FitConfig, name)


@click.command()
@click.option("--corpus", type=click.Path(path_type=Path), required=True, help="Corpus folder (see the corpus format in README.md; `tokalign demo-corpus` builds one).")
@click.option("--run", "run_dir", type=click.Path(path_type=Path), required=True, help="Run folder to write (or continue with --resume).")
@click.option("--lm", default=_d("lm"), show_default=True, help="Frozen LM: the default alias, an HF model id, a local folder or a .gguf file.")
@click.option("--steps", type=int, default=_d("steps"), show_default=True, help="Optimizer steps.")
@click.option("--batch-size", type=int, default=_d("batch_size"), show_default=True, help="Pairs per global batch (split across processes).")
@click.option("--lr", type=float, default=_d("lr"), show_default=True, help="Peak learning rate (AdamW).")
@click.option("--warmup-steps", type=int, default=_d("warmup_steps"), show_default=True, help="Linear warm-up steps before the cosine decay.")
@click.option("--min-lr-ratio", type=float, default=_d("min_lr_ratio"), show_default=True, help="Cosine floor as a fraction of the peak.")
@click.option("--weight-decay", type=float, default=_d("weight_decay"), show_default=True, help="AdamW weight decay on the table.")
@click.option("--holdout", type=int, default=_d("holdout"), show_default=True, help="Pairs held out for retrieval evaluation.")
@click.option("--seed", type=int, default=_d("seed"), show_default=True, help="Seed of the initialization, split and data order.")
@click.option("--log-every", type=int, default=_d("log_every"), show_default=True, help="Steps between metrics.jsonl rows.")
@click.option("--eval-every", type=int, default=_d("eval_every"), help="Steps between held-out loss/recall evaluations written to metrics.jsonl; 0: only the final one [default: steps // 4].")
@click.option("--checkpoint-every", type=int, default=_d("checkpoint_every"), show_default=True, help="Steps between checkpoints.")
@click.option("--keep-checkpoints", type=int, default=_d("keep_checkpoints"), show_default=True, help="How many recent checkpoints to keep.")
@click.option("--device", type=click.Choice(DEVICES), default=_d("device"), show_default=True, help="Where to train (multi-process: `accelerate launch`).")
@click.option("--resume", is_flag=True, help="Continue the run in --run from its last checkpoint.")
@click.option("--stop-after", type=int, default=_d("stop_after"), help="End this invocation after N steps (checkpointed), e.g. on time-limited jobs.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=_d("cache_root"), help="Cache for derived LM weights [default: $TOKALIGN_CACHE or ~/.cache/tokalign].")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def fit(corpus, run_dir, lm, steps, batch_size, lr, warmup_steps, min_lr_ratio, weight_decay, holdout, seed, log_every,
        eval_every, checkpoint_every, keep_checkpoints, device, resume, stop_after, cache_dir, no_progress) -> None:
    """Fit image-token embeddings to a frozen LM's token embeddings (paper, section 3.2)."""
    from tokalign.align.fit.loop import fit as run_fit

    config = FitConfig(corpus=corpus, run_dir=run_dir, lm=lm, steps=steps, batch_size=batch_size, lr=lr,
                       warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio, weight_decay=weight_decay,
                       holdout=holdout, seed=seed, log_every=log_every, eval_every=eval_every, checkpoint_every=checkpoint_every,
                       keep_checkpoints=keep_checkpoints, device=device, resume=resume, stop_after=stop_after,
                       cache_root=cache_dir, progress=not no_progress)
    result = run_fit(config)
    if not result.main_process:
        return
    if not result.finished:
        click.echo(f"stopped at step {result.steps}/{steps}; continue with `tokalign fit --resume` and the same options")
        return
    click.echo(f"run: {result.run_dir}")
    loss = "n/a" if result.final_loss is None else f"{result.final_loss:.4f}"  # a legacy summary may hold null
    click.echo(f"final loss {loss}   temperature {result.temperature:.4f} "
               f"(logit scale {result.logit_scale:.3f})   {result.pairs_per_s:,.0f} pairs/s")
    if result.retrieval:
        r = result.retrieval
        click.echo(f"held-out retrieval over {r['pairs']} pairs (chance in brackets):")
        for direction, name in (("i2t", "image->text"), ("t2i", "text->image")):
            cells = "   ".join(f"{k} {v:.3f} [{r['chance'][k]:.4f}]" for k, v in r[direction].items() if k in ("R@1", "R@5"))
            click.echo(f"  {name}: {cells}")
    best = result.best_heldout
    if best:
        click.echo(f"best held-out step {best['step']}: loss {best['heldout_loss']:.4f}   R@1 image->text "
                   f"{best['heldout_i2t_R@1']:.3f}, text->image {best['heldout_t2i_R@1']:.3f} (at the last step: held-out "
                   f"loss {(result.retrieval or {}).get('loss', float('nan')):.4f})")
