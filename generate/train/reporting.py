"""Where training figures go: ``metrics.jsonl`` (main process), Accelerate's trackers, the tqdm bar.

Rows: ``{"step", "split": "train", "loss", "ppl", "<bucket>_loss", "<bucket>_ppl", "<bucket>_tokens", "tokens",
"lr", "grad_norm", "tokens_per_s", "useful_tokens_per_s", "pad_tokens_per_s", "mfu"}`` at every logged step (the
losses average the steps since the previous row, weighted by target tokens), and ``{"step", "split": "heldout",
...}`` at step 0, every ``--eval-every`` steps and at the end. ``mfu`` is null off GPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tokalign.align.training.metrics import MetricsLog, finite_or_none
from tokalign.align.training.progress import progress_bar
from tokalign.generate.train import run_folder as rf

log = logging.getLogger(__name__)


class Reporter:
    def __init__(self, accelerator, run_dir: Path, config, start: int) -> None:
        self.acc, self.main = accelerator, accelerator.is_main_process
        self.metrics = MetricsLog(Path(run_dir) / rf.METRICS, start) if self.main else None
        self.trackers = config.run.report_to != "none"
        if self.trackers:
            accelerator.init_trackers("tokalign-generator", config=_flat(config.to_json()))
        self.bar = progress_bar(config.run.progress and self.main, desc="generator", unit="step",
                                total=config.optim.steps, initial=start)

    def train(self, step: int, figures: dict, rates: dict, grad_norm: float, lr: float) -> None:
        row = {"step": step, "split": "train", **figures, "lr": lr, "grad_norm": grad_norm, **rates}
        self._write(row)
        self.bar.set_postfix(loss=_f(figures.get("loss")), img=_f(figures.get("image_loss")),
                             txt=_f(figures.get("text_loss")), tok_s=f"{rates['tokens_per_s']:,.0f}")
        self.bar.update(step - self.bar.n)
        log.debug("step %d loss %.4f", step, figures.get("loss", float("nan")))

    def heldout(self, step: int, figures: dict) -> None:
        if figures:
            self._write({"step": step, "split": "heldout", **figures})

    def _write(self, row: dict) -> None:
        if self.metrics is not None:
            self.metrics.write(row)
        if self.trackers:
            prefix = row["split"]
            values = {f"{prefix}/{k}": v for k, v in finite_or_none(row).items()
                      if k not in ("step", "split") and isinstance(v, (int, float))}
            self.acc.log(values, step=row["step"])

    def close(self) -> None:
        self.bar.close()
        if self.trackers:
            self.acc.end_training()


def _f(value) -> str:
    return "nan" if value is None else f"{value:.3f}"


def _flat(body: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in body.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return out
