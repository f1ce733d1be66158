"""The forgetting table (the paper's Table 1): the generator probe on the base LM and on checkpoints along one run.

A checkpoint is not a model folder, so each probed one becomes ``OUT/probes/step_N/model``: the run's final model
folder (config, tokenizer, record) with the checkpoint's weights and the record's step count; the last step is
the final model itself. Each is probed into ``OUT/probes/step_N/probe`` by the library's ``run_probe`` (the base
LM's figures come from its cache after the first probe). A probe already written is read back, not redone.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import replace
from pathlib import Path

from tokalign.align.errors import TokalignError
from tokalign.align.formats import atomic
from tokalign.generate.experiment.config import ExperimentConfig

log = logging.getLogger(__name__)
PROBES = "probes"
WEIGHTS = "model.safetensors"


def probe_checkpoints(config: ExperimentConfig, run_dir: Path, steps: int, tokens_per_step: int) -> list[dict]:
    """Rows of the forgetting table: the base LM (0 tokens) then every kept checkpoint of ``run_dir``, in order."""
    from tokalign.align.training.checkpoint import list_checkpoints

    rows: list[dict] = []
    from tokalign.generate.model_folder import is_generator_folder
    from tokalign.generate.train import run_folder as rf

    final_model = Path(run_dir) / rf.MODEL
    for checkpoint in list_checkpoints(Path(run_dir) / rf.CHECKPOINTS):
        step = int(checkpoint.name.split("_")[1])
        folder = config.out / PROBES / f"step_{step}"
        model = final_model if step == steps else folder / "model"
        if step != steps and not is_generator_folder(model):
            checkpoint_model(checkpoint, final_model, model, step)
        report = _probe(config, model, folder / "probe")
        if not rows:
            rows.append(table_row("base LM", 0, report["language"]["base"], report["language"]["base"]))
        rows.append(table_row(f"step {step}", step * tokens_per_step, report["language"]["generator"],
                              report["language"]["base"]))
    return rows


def checkpoint_model(checkpoint: Path, final_model: Path, target: Path, step: int) -> Path:
    """Write ``target``: ``final_model`` with the weights of training ``checkpoint`` (atomically)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from tokalign.generate.model_folder import read_record, write_record

    weights = final_model / WEIGHTS
    if not weights.is_file():
        raise TokalignError(f"{final_model} holds no single {WEIGHTS} (a sharded save); the forgetting study probes "
                            "single-file models only")
    with safe_open(str(weights), "pt") as handle:
        keys = list(handle.keys())
    from tokalign.align.training.checkpoint import STATE

    state = load_file(str(checkpoint / STATE))
    tensors = {k: _weight(state, k) for k in keys}
    missing = [k for k, v in tensors.items() if v is None]
    if missing:
        raise TokalignError(f"checkpoint {checkpoint} lacks {missing[0]} of the saved model; the forgetting study "
                            "needs the checkpoints of the run whose model it probes")
    record = read_record(final_model)
    with atomic.atomic_dir(target) as tmp:
        for item in final_model.iterdir():
            if item.is_file() and item.name != WEIGHTS:
                shutil.copy2(item, tmp / item.name)
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
        write_record(tmp, replace(record, steps=step))
    return target


def _weight(state: dict, key: str):
    """Tensor ``key`` of the saved model from a checkpoint's ``model.`` tensors; a table the run trained split
    (``base`` rows, then ``new`` rows: :mod:`tokalign.generate.model.split_rows`) is concatenated back."""
    import torch

    if f"model.{key}" in state:
        return state[f"model.{key}"].contiguous()
    stem = f"model.{key[:-len('.weight')]}" if key.endswith(".weight") else None
    if stem is not None and f"{stem}.base" in state and f"{stem}.new" in state:
        return torch.cat([state[f"{stem}.base"], state[f"{stem}.new"]]).contiguous()
    return None


def _probe(config: ExperimentConfig, model: Path, out: Path) -> dict:
    try:
        from tokalign.generate.probe.run import JSON_FILE

        return json.loads((out / JSON_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    from tokalign.generate.probe.config import ProbeConfig
    from tokalign.generate.probe.run import run_probe

    p = config.preset
    probe = ProbeConfig(model=model, out=out, max_text_tokens=p.probe_text_tokens, image_rows=p.probe_image_rows,
                        device=p.device, cache_root=config.cache_root, progress=config.progress)
    log.info("probing %s", model)
    return run_probe(probe).report


def table_row(name: str, tokens: int, side: dict, base: dict) -> dict:
    """One row of the table from one side (base or generator) of a probe report."""
    ppl = side["perplexity"]
    mass = ppl.get("mass_off_text", {})
    same = sum(a["completion"] == b["completion"] for a, b in zip(side["completions"], base["completions"]))
    hits, items = side["translation"]["hits"], len(side["translation"]["items"])
    return {"name": name, "tokens": tokens, "perplexity": ppl["perplexity"],
            "image_mass": mass.get("image", 0.0), "translation_hits": hits, "translation": f"{hits}/{items}",
            "knowledge_same": f"{same}/{len(side['completions'])}",
            "knowledge_example": _relativity(side["completions"])}


def _relativity(completions: list[dict]) -> str:
    """The completion of the paper's Table 1 knowledge prompt (the first prompt when it is not there)."""
    chosen = next((c for c in completions if "relativity" in c["prompt"]), completions[0] if completions else None)
    return chosen["completion"] if chosen else ""
