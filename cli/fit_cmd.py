"""``tokalign fit``."""

from __future__ import annotations

import click

from tokalign.align.fit.config import DEVICES, FitConfig
from tokalign.cli.options import config_option


def _o(name: str, **kwargs):
    return config_option(FitConfig, name, **kwargs)


@click.command()
@_o("corpus")
@_o("run_dir")
@_o("lm")
@_o("steps")
@_o("batch_size")
@_o("lr")
@_o("warmup_steps")
@_o("min_lr_ratio")
@_o("weight_decay")
@_o("holdout")
@_o("seed")
@_o("log_every")
@_o("eval_every")
@_o("checkpoint_every")
@_o("keep_checkpoints")
@_o("device", type=click.Choice(DEVICES))
@_o("resume")
@_o("stop_after")
@_o("cache_root", dest="cache_dir")
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
               f"(logit scale {result.logit_scale:.3f})   {result.pairs_per_s:,.0f} pairs/s overall, "
               f"{result.steady_pairs_per_s:,.0f} steady")
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
