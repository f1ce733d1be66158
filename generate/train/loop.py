"""``tokalign generator train``: the generator's training run on Accelerate (CPU, one GPU, many processes).

The same code runs under ``python -m tokalign.cli.main`` and ``accelerate launch`` (DDP, or FSDP from an Accelerate
config file): every process builds the model, takes its share of each global batch (:mod:`.data`) and the step
normalizes by the global target count (:mod:`.step`), so the trajectory does not depend on the process count.
Randomness is a function of (seed, step, process) (the torch generator is re-seeded before each step; data order and
caption dropout are seeded by epoch), so ``--resume`` continues exactly: same batches, same dropout draws, same
weights. Only the main process writes the run folder, under its lock.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from tokalign.align.errors import TokalignError
from tokalign.align.formats import atomic
from tokalign.align.training.accelerator import build_accelerator
from tokalign.align.training.checkpoint import load_checkpoint
from tokalign.align.training.run_lifecycle import due, end_step
from tokalign.align.training.schedule import lr_at
from tokalign.generate.config import GeneratorTrainConfig
from tokalign.generate.train import run_folder as rf
from tokalign.generate.train.build import Prepared, prepare
from tokalign.generate.train.compiling import compile_model, wants_compile
from tokalign.generate.train.data import StepPlan, micro_batch
from tokalign.generate.train.evaluate import evaluate
from tokalign.generate.train.finite_guard import FiniteGuard
from tokalign.generate.train.loss import LossSums
from tokalign.generate.train.optim import build_optimizer, parameter_counts
from tokalign.generate.train.reporting import Reporter
from tokalign.generate.train.save import save_model_folder
from tokalign.generate.train.sharded_checkpoint import load_sharded, save_sharded
from tokalign.generate.train.step import LossOptions, loss_options, train_step
from tokalign.generate.train.throughput import Throughput, device_peak_flops, model_shape

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    finished: bool
    step0: dict = field(default_factory=dict)  #: held-out figures before training
    final: dict = field(default_factory=dict)  #: held-out figures at the end
    tokens_per_s: float = 0.0
    main_process: bool = True

    @property
    def model_dir(self) -> Path:
        return self.run_dir / rf.MODEL


def train(config: GeneratorTrainConfig) -> TrainResult:
    """Run (or ``--resume``) a generator training run as configured; return its held-out figures."""
    accelerator = _accelerator(config)
    life = rf.lifecycle(config, accelerator.is_main_process)
    with life.writing() as resume_from:
        if resume_from is not None:  # the corpus (by content) and the LM, before any load
            rf.check_resume_inputs(life.folder, rf.input_identities(config.data.corpus, config.model.lm))
            if (summary := life.finished(resume_from, config.optim.steps)) is not None:
                return TrainResult(life.folder, config.optim.steps, True, summary.get("step0", {}),
                                   summary.get("final", {}), summary.get("tokens_per_s", 0.0))
        rf.check_seq_len(config.data.seq_len, config.model.lm)
        if accelerator.is_main_process:  # the sequences are a cache: a stale one is rebuilt, never refused
            rf.drop_stale_sequences(life.folder, config.data, config.model.lm, fresh=resume_from is None)
        prepared = prepare(config, accelerator)
        if resume_from is not None:
            life.check_identities(prepared.identities)
        return _Run(config, accelerator, prepared, life).run(resume_from)


def _accelerator(config: GeneratorTrainConfig):
    gpu = config.run.device != "cpu" and torch.cuda.is_available()
    precision = config.run.precision if config.run.precision != "auto" else ("bf16" if gpu else "fp32")
    kwargs = {"mixed_precision": "bf16" if precision == "bf16" else "no"}
    if config.run.report_to != "none":
        _check_tracker(config.run.report_to)
        kwargs.update(log_with=config.run.report_to, project_dir=str(config.run.run_dir))
    return build_accelerator(config.run.device, **kwargs)


def _check_tracker(name: str) -> None:
    import importlib.util

    module = {"tensorboard": "tensorboard", "comet_ml": "comet_ml"}.get(name, name)
    if importlib.util.find_spec(module) is None and not (name == "tensorboard" and importlib.util.find_spec("tensorboardX")):
        raise TokalignError(f"--report-to {name} needs the {module} package, which is not installed; "
                            f"`pip install {module}` or drop --report-to (metrics.jsonl is always written)")


class _Run:
    """One invocation of a run: set-up, the steps, checkpoints, the final save."""

    def __init__(self, config: GeneratorTrainConfig, accelerator, prepared: Prepared, life: rf.GeneratorRun) -> None:
        self.cfg, self.acc, self.p, self.life = config, accelerator, prepared, life
        self.run_dir = life.folder
        model = prepared.model
        trainable, total = parameter_counts(model)
        log.info("parameters: %s trainable of %s (--train-only %s); %d process(es), %s, %s", f"{trainable:,}",
                 f"{total:,}", config.model.train_only, accelerator.num_processes, accelerator.distributed_type,
                 accelerator.mixed_precision)
        self.counts = {"trainable": trainable, "total": total}
        shape = model_shape(model)
        self.optimizer = build_optimizer(model, config.optim, accelerator.device)
        self.sharded = str(accelerator.distributed_type).endswith("FSDP")
        self.loss = loss_options(config.run.precision, accelerator.device, model, fused=not self.sharded)
        self.precision = {"requested": config.run.precision,
                          "resolved": "bf16" if accelerator.mixed_precision == "bf16" or self.loss.cpu_bf16 else "fp32"}
        log.info("precision: --precision %s runs %s", config.run.precision, self.precision["resolved"])
        self.compiled = compile_model(model, accelerator.device, loss=self.loss) \
            if wants_compile(config.run.compile, accelerator.device) else None
        self.model, self.optimizer = accelerator.prepare(model, self.optimizer)
        self.guard = FiniteGuard.for_run(self.optimizer, accelerator.device, allow=not self.sharded)
        self.params = list(self.model.parameters())
        self.plan = StepPlan(prepared.train_items, config.global_sequences, config.optim.micro_batch,
                             accelerator.num_processes, accelerator.process_index, config.run.seed)
        self.throughput = Throughput(shape.flops_per_token(config.data.seq_len),
                                     device_peak_flops(accelerator.device), accelerator.num_processes)
        self.window = LossSums.zeros(accelerator.device)
        self.step = 0
        if self.sharded and config.model.train_only == "new-rows":
            raise TokalignError("--train-only new-rows splits the embedding tables, which FSDP does not shard here; "
                                "run it with DDP (`accelerate launch --multi_gpu`) or one process")

    # ------------------------------------------------------------ the run
    def run(self, resume_from: Path | None) -> TrainResult:
        cfg, acc = self.cfg, self.acc
        start = self._resume(resume_from) if resume_from is not None else 0
        if acc.is_main_process:
            self._write_record()
        reporter = Reporter(acc, self.run_dir, cfg, start)
        step0 = self._step0() if start else None
        if not start:
            step0 = self._evaluate()
            diagnostics = self.p.diagnostics(self._plain()) if acc.is_main_process or self.sharded else {}
            if acc.is_main_process:
                heldout = {**step0, "image_uniform_loss": math.log(self.p.layout.codebook_size)}
                atomic.write_json(self.run_dir / rf.DIAGNOSTICS, {**diagnostics, "heldout": heldout,
                                                                 "parameters": self.counts})
            reporter.heldout(0, step0)
        end = end_step(start, cfg.optim.steps, cfg.run.stop_after)
        self.model.train()
        rate, t0, window_t = 0.0, time.perf_counter(), time.perf_counter()
        for step in range(start, end):
            result = self._step(step)
            self.step = step + 1
            if self.step == end or not (self.step % cfg.run.log_every and self.step % cfg.run.eval_every
                                        and self.step % cfg.run.checkpoint_every):
                self.guard.check()  # before any figure is logged or any weight saved (waits for the device)
            self.window.add_(result.sums)
            self.throughput.add(result.useful, result.padded)
            if due(self.step, cfg.run.log_every, end):
                rates = self.throughput.rates(time.perf_counter() - window_t)
                reporter.train(self.step, self.window.as_dict(), rates, result.grad_norm, self._lr(step))
                self.window, window_t = LossSums.zeros(acc.device), time.perf_counter()
            if self.step % cfg.run.eval_every == 0 and self.step != cfg.optim.steps:
                reporter.heldout(self.step, self._evaluate())
            if due(self.step, cfg.run.checkpoint_every, end):
                self._checkpoint()
        if end > start:
            rate = (end - start) * cfg.global_sequences * cfg.data.seq_len / max(time.perf_counter() - t0, 1e-9)
        finished = self.step >= cfg.optim.steps
        final = {}
        if finished:
            final, rate = self._final(start, rate, reporter)
            self._finish(step0 or {}, final, rate)
        acc.wait_for_everyone()
        reporter.close()  # after the barrier: ending the trackers also ends the process group
        return TrainResult(self.run_dir, self.step, finished, step0 or {}, final, rate, acc.is_main_process)

    def _lr(self, step: int) -> float:
        o = self.cfg.optim
        return lr_at(step, peak=o.lr, warmup=o.warmup_steps, total=o.steps, floor_ratio=o.min_lr_ratio)

    def _step(self, step: int):
        torch.manual_seed(_step_seed(self.cfg.run.seed, step, self.acc.process_index))
        epoch = self.plan.epoch(step)
        batches = [micro_batch(self.p.source, idx, epoch, self.acc.device) for idx in self.plan.local_micro_batches(step)]
        def run(loss: LossOptions):
            return train_step(self.acc, self.model, self.optimizer, self.params, batches, step=step, lr=self._lr(step),
                              grad_clip=self.cfg.optim.grad_clip, guard=self.guard, loss=loss)
        if self.compiled is None:
            return run(self.loss)
        if not self.compiled.proven:
            return self.compiled.first_step(run, self.optimizer, self.acc.device)
        return run(self.compiled.options)

    def _evaluate(self) -> dict:
        return evaluate(self.acc, self.model, self.p.source, self.p.holdout_items, self.cfg.optim.micro_batch,
                        self.cfg.run.eval_batches)

    # ------------------------------------------------------------ state
    def _resume(self, checkpoint: Path) -> int:
        if self.sharded:
            trainer = load_sharded(self.acc, checkpoint)
        else:
            trainer = load_checkpoint(checkpoint, self._plain(), self.optimizer)
        extra = trainer.get("extra", {})
        if "window_loss" in extra:
            self.window = LossSums(extra["window_loss"].to(self.acc.device), extra["window_count"].to(self.acc.device))
        log.info("resuming %s from step %d", self.run_dir, trainer["step"])
        self.step = int(trainer["step"])
        return self.step

    def _plain(self):
        """The model without DDP and compile wrappers (its state dict has the plain names)."""
        return self.acc.unwrap_model(self.model, keep_torch_compile=False)

    def _checkpoint(self) -> None:
        keep = self.cfg.run.keep_checkpoints
        if self.sharded:  # the window sums are not carried here: a resumed run's first row averages fewer steps
            save_sharded(self.acc, self.run_dir / rf.CHECKPOINTS, self.step, {"trajectory": self.life.trajectory}, keep)
            return
        extra = {"window_loss": self.window.loss, "window_count": self.window.count}
        self.life.save_checkpoint(self.acc, self.step, self._plain(), self.optimizer, keep, extra=extra)

    def _write_record(self) -> None:
        inputs = rf.input_identities(self.cfg.data.corpus, self.cfg.model.lm)
        self.life.write_record({"config": self.cfg.to_json(), "identities": self.p.identities, "inputs": inputs,
                                "layout": self.p.layout.to_json(), "init": self.p.provenance,
                                "parameters": self.counts, "processes": self.acc.num_processes})

    def _step0(self) -> dict:
        """The held-out figures written before the first step (read back on resume)."""
        import json

        try:
            heldout = json.loads((self.run_dir / rf.DIAGNOSTICS).read_text(encoding="utf-8")).get("heldout", {})
        except (OSError, ValueError, AttributeError):
            return {}
        return {k: v for k, v in heldout.items() if k != "image_uniform_loss"}

    def _final(self, start: int, rate: float, reporter: Reporter) -> tuple[dict, float]:
        """The final held-out figures and the run's rate, measured and logged once: an invocation that only
        finishes the save (a resume after a kill during it) reuses the logged row and the recorded rate."""
        if start == self.cfg.optim.steps:
            logged = rf.final_figures(self.run_dir, start)
            if logged is not None:
                return logged
        final = self._evaluate()
        reporter.heldout(self.step, final)
        return final, rate

    def _finish(self, step0: dict, final: dict, rate: float) -> None:
        state = self.acc.get_state_dict(self.model) if self.sharded else None  # collective under FSDP
        if self.acc.is_main_process:  # the figures first: the model folder, written last, marks the run finished
            self.life.write_summary({"steps": self.step, "step0": step0, "final": final, "tokens_per_s": rate,
                                     "parameters": self.counts, "precision": self.precision})
            model = self._plain() if self.sharded else self.p.finalize(self._plain())
            record = replace(self.p.record, steps=self.step)
            save_model_folder(self.run_dir / rf.MODEL, model, self.p.tokenizer, self.p.layout, record, state_dict=state)


def _step_seed(seed: int, step: int, rank: int) -> int:
    """The torch seed of one process at one step (dropout draws are a function of seed, step and process)."""
    import numpy as np

    from tokalign.align.training.seeds import GENERATOR_TAG

    return int(np.random.SeedSequence([seed, step, rank, GENERATOR_TAG]).generate_state(1, dtype=np.uint64)[0] >> 1)
