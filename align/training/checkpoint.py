"""Resumable training checkpoints: ``step_N/`` folders written atomically, the newest ``keep`` kept.

Each holds ``state.safetensors`` (the model's state dict under ``model.``, the optimizer's per-parameter slots
under ``optim.``, and any ``extra`` tensors under ``extra.``) and ``trainer.json`` (the step, the optimizer's
hyper-parameters and whatever JSON ``info`` the caller records: the settings its trajectory depends on, a data
position, RNG states). Used by the fit and the generator.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from tokalign.align.formats import atomic
from tokalign.align.errors import TokalignError

_NAME = re.compile(r"^step_(\d+)$")
STATE, TRAINER = "state.safetensors", "trainer.json"


def save_checkpoint(folder: Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    info: dict[str, Any], keep: int, extra: dict[str, torch.Tensor] | None = None) -> Path:
    tensors, seen = {}, set()
    for k, v in model.state_dict().items():  # a tied weight appears under two names: store a copy for the second
        v = v.detach().cpu().contiguous()
        tensors[f"model.{k}"] = v.clone() if v.data_ptr() in seen else v
        seen.add(v.data_ptr())
    tensors.update({f"extra.{k}": v.detach().cpu().contiguous() for k, v in (extra or {}).items()})
    state = optimizer.state_dict()
    for pid, slots in state["state"].items():
        for name, value in slots.items():
            tensors[f"optim.{pid}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    trainer = dict(info, step=step, param_groups=state["param_groups"])
    target = folder / f"step_{step}"
    with atomic.atomic_dir(target) as tmp:
        from safetensors.torch import save_file

        save_file(tensors, str(tmp / STATE))
        (tmp / TRAINER).write_text(json.dumps(trainer, indent=2, default=_jsonable) + "\n")
    for old in list_checkpoints(folder)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def list_checkpoints(folder: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and (p / TRAINER).is_file()]
    return [p for _, p in sorted(found)]


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model and optimizer in place; return ``trainer.json`` (with ``extra`` tensors under ``"extra"``)."""
    try:
        trainer = json.loads((path / TRAINER).read_text())
        tensors = load_file(str(path / STATE))
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise TokalignError(f"checkpoint {path} is damaged ({exc}); delete it to resume from an earlier one") from None
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    for key, value in model.state_dict().items():
        if key not in model_state or model_state[key].shape != value.shape:
            got = tuple(model_state[key].shape) if key in model_state else "nothing"
            raise TokalignError(f"checkpoint {path} holds {key} of shape {got}, this run needs {tuple(value.shape)}: "
                                "the model's shape differs (codebook size, d_model, vocabulary); resume with the original "
                                "corpus and --lm, or start a new --run")
    model.load_state_dict(model_state)
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            slots.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": slots, "param_groups": trainer["param_groups"]})
    trainer["extra"] = {k[len("extra."):]: v for k, v in tensors.items() if k.startswith("extra.")}
    return trainer
