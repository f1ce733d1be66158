"""``tokalign fit``: contrastive alignment of image tokens to a frozen LM (paper, section 3.2).

For each image-caption pair the image vector is the mean of learnable
image-token embeddings over the image's tokens, the caption vector the mean
of the LM's frozen input embeddings over the caption's tokens; both are
L2-normalized and scored with CLIP's symmetric InfoNCE and a learnable
temperature.  Only the image table and the logit scale learn.

The loop runs through Accelerate (CPU, one GPU, or many processes).  Each
process takes its slice of every global batch and the loss gathers features
across processes with gradient, so the trajectory does not depend on the
number of processes.

Nothing held in host memory grows with the corpus: batches come from the
memory-mapped corpus in a per-epoch bijective order (``data_order.py``),
caption vectors are computed per batch (``caption_ids.py``), the held-out
split is O(holdout) (``split.py``); on a GPU the batch's token counts are
built on the device, from a copy of the corpus held there when it fits
(``batches.py``).  Every ``--eval-every`` steps the held-out
loss and recall go to ``metrics.jsonl`` (``evaluate.py``, ``curves.py``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tokalign.align.formats import atomic
from tokalign.align.formats import run_folder as rd
from tokalign.align.fit.allocator import reuse_large_blocks
from tokalign.align.fit.batches import local_slice, open_batches
from tokalign.align.fit.clock import Clock as _Clock
from tokalign.align.fit.caption_ids import open_caption_ids
from tokalign.align.fit.curves import best_heldout, heldout_row, heldout_verdict
from tokalign.align.fit.data_order import EpochOrder
from tokalign.align.training.accelerator import build_accelerator
from tokalign.align.training.checkpoint import load_checkpoint
from tokalign.align.training.run_lifecycle import due, end_step
from tokalign.align.fit.lifecycle import FitRun
from tokalign.align.formats.corpus import Corpus, open_corpus
from tokalign.align.errors import TokalignError
from tokalign.align.fit.config import FitConfig
from tokalign.align.fit.loss import clip_loss
from tokalign.align.fit.evaluate import HeldOut
from tokalign.align.training.metrics import MetricsLog
from tokalign.align.training.progress import progress_bar
from tokalign.align.training.schedule import lr_at
from tokalign.align.fit.split import Split, make_split
from tokalign.align.fit.table import ImageTokenTable, save_table
from tokalign.align.fit import guards

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    run_dir: Path
    steps: int
    finished: bool
    final_loss: float
    logit_scale: float
    retrieval: dict | None
    pairs_per_s: float
    main_process: bool = True
    best_heldout: dict | None = None  # the evaluation with the lowest held-out loss (curves.best_heldout)
    steady_pairs_per_s: float = 0.0  # after the first logged window, evaluations and checkpoints left out

    @property
    def temperature(self) -> float:
        return math.exp(-self.logit_scale)


def fit(config: FitConfig) -> FitResult:
    """Run (or resume) a fit as configured; return its final figures (one writer per run folder: lock.py)."""
    guards.check_seed(config.seed)
    life = FitRun.of(config)
    with life.writing() as resume_from:
        return _fit(config, life, resume_from)


def _fit(config: FitConfig, life: FitRun, resume_from: Path | None) -> FitResult:
    from tokalign.align.lm.load import load_frozen_lm, tokenize_captions

    accelerator = build_accelerator(config.device)
    if accelerator.device.type == "cpu":
        reuse_large_blocks()  # the 38 MB gradient is reused each step instead of being mapped afresh
    corpus = open_corpus(config.corpus)
    split = make_split(corpus.items, config.holdout, config.seed)
    _check_sizes(config, split.train_items, accelerator.num_processes)
    if (summary := life.finished(resume_from, config.steps)) is not None:
        return FitResult(config.run_dir, config.steps, True, summary["final_loss"], summary["logit_scale"],
                         summary.get("holdout"), summary["pairs_per_s"], best_heldout=summary.get("best_heldout"),
                         steady_pairs_per_s=summary.get("pairs_per_s_steady") or 0.0)
    lm = load_frozen_lm(config.lm, config.cache_root)
    if resume_from is not None:  # before the caption cache, which another LM or corpus would rebuild
        life.check_inputs(corpus, lm)
    captions = _open_captions(config, accelerator, corpus, lm, tokenize_captions)
    embeddings = lm.embeddings.to(accelerator.device)
    heldout = None
    if len(split.holdout):
        heldout = HeldOut(corpus, split.holdout, captions.vectors(embeddings, split.holdout), config.batch_size)

    model = ImageTokenTable(corpus.codebook_size, lm.d_model, seed=config.seed,
                            init_row_norm=float(lm.embeddings.norm(dim=1).mean()),
                            init_logit_scale=config.init_logit_scale)
    optimizer = _optimizer(model, config)
    model, optimizer = accelerator.prepare(model, optimizer)
    start = 0
    if resume_from is not None:
        start = load_checkpoint(resume_from, accelerator.unwrap_model(model), optimizer)["step"]
        log.info("resuming %s from step %d", config.run_dir, start)
    if accelerator.is_main_process:
        life.write_config(config, corpus, lm, split, accelerator.num_processes)
        rd.store_lm(config.run_dir, lm)
    accelerator.wait_for_everyone()
    loop = _Loop(config, accelerator, model, optimizer, corpus, split, captions, embeddings, heldout, life)
    last_loss, pairs_per_s = loop.run(start)
    last_loss, pairs_per_s = guards.carry_final_figures(config.run_dir, loop.step, last_loss, pairs_per_s)
    finished = loop.step >= config.steps
    retrieval, best = None, None
    if finished:
        retrieval, best = _finish(config, accelerator, model, corpus, loop, lm, last_loss, pairs_per_s)
    accelerator.wait_for_everyone()
    scale = accelerator.unwrap_model(model).logit_scale.item()
    return FitResult(config.run_dir, loop.step, finished, last_loss, scale, retrieval, pairs_per_s,
                     accelerator.is_main_process, best, loop.steady_pairs_per_s)


# ------------------------------------------------------------------ set-up
def _check_sizes(config: FitConfig, train_items: int, world: int) -> None:
    if config.batch_size % world:
        raise TokalignError(f"--batch-size {config.batch_size} is not divisible by the {world} processes; "
                            f"pick a multiple of {world}")
    if train_items < config.batch_size:
        raise TokalignError(f"the corpus leaves {train_items} training pairs after holding out {config.holdout}, fewer "
                            f"than one batch of {config.batch_size}; lower --batch-size{' or --holdout' if config.holdout else ''}, "
                            "or use a larger corpus")


def _open_captions(config: FitConfig, accelerator, corpus: Corpus, lm, tokenize):
    """The caption ids, checked; the main process builds a re-tokenized cache first, the others then open it."""
    captions = open_caption_ids(corpus, lm, tokenize, config.run_dir) if accelerator.is_main_process else None
    accelerator.wait_for_everyone()
    return captions if captions is not None else open_caption_ids(corpus, lm, tokenize, config.run_dir, build=False)


def _optimizer(model: ImageTokenTable, config: FitConfig) -> torch.optim.Optimizer:
    groups = [{"params": [model.weight], "weight_decay": config.weight_decay},
              {"params": [model.logit_scale], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps, fused=True)


# ------------------------------------------------------------------ the loop
class _Loop:
    """The optimizer steps, fed by a batch source (batches.py): on a CPU bags and caption vectors prepared one
    step ahead on a worker thread, on a GPU token counts and caption vectors built on the device.

    Host memory does not grow with the corpus: a step reads its batch's image tokens and caption ids from the
    memory-mapped corpus (or caption cache), and the data order is a per-epoch bijection (data_order.py); on a
    GPU a corpus within the device budget is held there (device_batches.py).  No step waits on the host
    for its loss: non-finite losses are caught at the next flush, naming their step (guards.LossWatch).
    Every ``eval_interval`` steps and at the last step the main process evaluates the held-out pairs and logs
    a ``heldout_*`` row (curves.py).
    """

    def __init__(self, config, accelerator, model, optimizer, corpus, split: Split, captions, embeddings,
                 heldout: HeldOut | None, life: FitRun) -> None:
        self.config, self.acc, self.model, self.optimizer, self.life = config, accelerator, model, optimizer, life
        self.corpus, self.captions, self.embeddings, self.heldout = corpus, captions, embeddings, heldout
        self.order = EpochOrder(split.train_items, config.batch_size, config.seed, split.train_item)
        self.steps_per_epoch = self.order.steps_per_epoch
        self.step = 0
        self.final_eval: dict | None = None
        self.steady_pairs_per_s = 0.0
        self._logit_scale = accelerator.unwrap_model(model).logit_scale

    def _local_batches(self, first: int, count: int) -> np.ndarray:
        """This process's corpus indices of steps ``first .. first+count-1``, (count, local batch)."""
        return local_slice(self.order.batches(first, count), self.acc.process_index, self.acc.num_processes)

    def run(self, start: int) -> tuple[float, float]:
        """Train steps ``start ..``; return the last logged loss and the invocation's pairs/s (evaluations and
        checkpoints included; ``self.steady_pairs_per_s`` leaves them and the first logged window out)."""
        cfg = self.config
        self.step = start
        end = end_step(start, cfg.steps, cfg.stop_after)
        metrics = MetricsLog(cfg.run_dir / rd.METRICS, start) if self.acc.is_main_process else None
        bar = progress_bar(cfg.progress and self.acc.is_main_process, desc="fit", unit="step", total=cfg.steps,
                           initial=start)
        self.watch = guards.LossWatch(every_step=self.acc.device.type != "cuda", peak_lr=cfg.lr)
        loss_value, pairs_per_s = float("nan"), 0.0
        batches = open_batches(self.corpus, self.captions, self.embeddings, self._local_batches, start, end)
        clock = _Clock(cfg.batch_size)  # after the set-up (on a GPU: the corpus copied there)
        try:
            for step in range(start, end):
                batch, text = batches.get(step)
                loss = self._train_step(step, batch, text)
                self.step = step + 1
                clock.tick()
                if due(self.step, cfg.log_every, end):
                    self.watch.flush()
                    loss_value = float(self.acc.reduce(loss.detach(), reduction="mean"))
                    pairs_per_s = clock.window()
                    self._log(metrics, bar, step, loss_value, pairs_per_s)
                if self._eval_due():
                    with clock.paused(self.watch):
                        self._evaluate(metrics)
                if due(self.step, cfg.checkpoint_every, end):
                    with clock.paused(self.watch):
                        self._checkpoint()
        finally:
            batches.close()
        bar.close()
        self.steady_pairs_per_s = clock.steady()
        if end > start:  # report the whole invocation's throughput, not the last window's
            pairs_per_s = clock.overall(end - start)
            log.info("fit: %s pairs/s overall (%d steps), %s pairs/s steady (after the first logged window, without "
                     "evaluations and checkpoints)", f"{pairs_per_s:,.0f}", end - start, f"{self.steady_pairs_per_s:,.0f}")
        return loss_value, pairs_per_s

    def _train_step(self, step: int, batch, text: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        lr = lr_at(step, peak=cfg.lr, warmup=cfg.warmup_steps, total=cfg.steps, floor_ratio=cfg.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        image, logit_scale = self.model(batch)
        loss = clip_loss(image, text, logit_scale)
        self.watch.record(loss, step + 1, lr)  # on a GPU read at the next flush: no wait on the host here
        self.acc.backward(loss)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        guards.clamp_logit_scale_(self._logit_scale, cfg.max_logit_scale)
        self._lr = lr
        return loss

    def _log(self, metrics, bar, step: int, loss: float, pairs_per_s: float) -> None:
        scale = self.acc.unwrap_model(self.model).logit_scale.item()
        row = {"step": step + 1, "epoch": step // self.steps_per_epoch, "loss": loss, "logit_scale": scale,
               "temperature": math.exp(-scale), "lr": self._lr, "pairs_per_s": pairs_per_s}
        if metrics is not None:
            metrics.write(row)
        bar.set_postfix(loss=f"{loss:.4f}", T=f"{math.exp(-scale):.4f}", pairs_s=f"{pairs_per_s:,.0f}")
        bar.update(step + 1 - bar.n)
        log.debug("step %d loss %.4f scale %.3f", step + 1, loss, scale)

    def _eval_due(self) -> bool:
        every = self.config.eval_interval
        return self.heldout is not None and every > 0 and (self.step % every == 0 or self.step == self.config.steps)

    def _evaluate(self, metrics) -> None:
        """Held-out loss and recall on the main process (local work only: the others train on meanwhile)."""
        if not self.acc.is_main_process:
            return
        table = self.acc.unwrap_model(self.model)
        result = self.heldout.evaluate(table.weight.detach(), table.logit_scale.item())
        metrics.write(heldout_row(self.step, result))
        if self.step == self.config.steps:
            self.final_eval = result

    def _checkpoint(self) -> None:
        self.life.save_checkpoint(self.acc, self.step, self.acc.unwrap_model(self.model), self.optimizer,
                                  self.config.keep_checkpoints, {"codebook_size": self.corpus.codebook_size})


# ------------------------------------------------------------------ the end
def _finish(config, accelerator, model, corpus, loop: _Loop, lm, last_loss, pairs_per_s) -> tuple[dict | None, dict | None]:
    """Write the table, ``eval.json`` (the held-out figures at the last step) and ``summary.json``."""
    if not accelerator.is_main_process:
        return None, None
    table = accelerator.unwrap_model(model)
    scale = table.logit_scale.item()
    retrieval = loop.final_eval
    if retrieval is None and loop.heldout is not None:
        retrieval = loop.heldout.evaluate(table.weight.detach(), scale)
    rows = rd.read_metrics(config.run_dir)
    save_table(config.run_dir / rd.TABLE, table.weight, scale, {
        "lm": lm.identity, "lm_spec": lm.spec, "lm_embedding_sha256": lm.embedding_sha256, "d_model": lm.d_model,
        "codebook_size": corpus.codebook_size, "image_tokenizer": corpus.image_tokenizer, "steps": config.steps,
        "final_loss": last_loss, "final_logit_scale": scale, "final_temperature": math.exp(-scale),
        "corpus": str(corpus.root),
    })
    if retrieval is not None:
        atomic.write_json(config.run_dir / rd.EVAL, retrieval)
    best = best_heldout(rows)
    loop.life.write_summary({
        "steps": config.steps, "final_loss": last_loss, "logit_scale": scale, "temperature": math.exp(-scale),
        "pairs_per_s": pairs_per_s, "pairs_per_s_steady": loop.steady_pairs_per_s, "holdout": retrieval,
        "best_heldout": best, "heldout_verdict": heldout_verdict(rows)})
    return retrieval, best
