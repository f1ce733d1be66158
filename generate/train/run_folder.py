"""The generator run folder: what ``tokalign generator train --run`` writes, its rules and its lock.

::

    run.json          the kind marker: the config, its trajectory, the LM/corpus/export identities, the layout
    .tokalign.json    the shared output marker (kind "generator-run"); .tokalign.lock: the writer's lock
    diagnostics.json  step-0 diagnostics, written before the first step
    metrics.jsonl     one JSON object per logged step (training buckets, held-out rows, throughput)
    checkpoints/      step_N/ folders, written atomically
    model/            the final model folder (see :mod:`tokalign.generate.model_folder`)
    summary.json      the step-0 and final figures
    sequences/        the corpus packed into memory-mapped training rows: a cache keyed by content, rebuilt when stale

Rules, through the shared run lifecycle (:class:`GeneratorRun`, a
:class:`tokalign.align.training.run_lifecycle.RunLifecycle` of kind :data:`KIND`): a run folder is written only if it
is new, empty, or a generator run; anything else (user files, a fit run, a folder inside the corpus) is refused in
one line, and so is a second writer (an exclusive ``fcntl`` lock the kernel drops when its holder dies). A
generator run with checkpoints or a model is continued only with ``--resume``; one that stopped before its first
checkpoint holds nothing worth keeping and starts again. A refused run leaves nothing behind.

``--resume`` identifies the inputs by content, before anything is loaded (:func:`check_resume_inputs`): the corpus
by its fingerprint (the same corpus at another path continues, another one of the same size is refused), the LM
by its spec and identity; the settings and the loaded inputs' identities by the lifecycle, whose refusal names
each option with both values. A run whose model folder is missing or damaged is saved again from its last checkpoint, reusing the
final figures it logged (:func:`final_figures`), so ``metrics.jsonl`` holds one final held-out row.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from tokalign.align.errors import TokalignError
from tokalign.align.formats import atomic, outputs
from tokalign.align.training.run_lifecycle import RunLifecycle

log = logging.getLogger(__name__)

RECORD = "run.json"
DIAGNOSTICS = "diagnostics.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
MODEL = "model"
SUMMARY = "summary.json"
SEQUENCES = "sequences"
FORMAT = "tokalign-generator-run"
KIND = "generator-run"
outputs.register_kind(KIND, signature=(RECORD, "format", lambda v: v == FORMAT))


def read_record(run: Path) -> dict[str, Any] | None:
    """The run's ``run.json`` if it is a generator run, else None."""
    return GeneratorRun(run, resume=False, trajectory={}).read_record()


class GeneratorRun(RunLifecycle):
    """What a generator run says about itself to the shared lifecycle: its kind, record and model folder; a model
    folder that is missing or damaged is not whole, so the run is saved again from its last checkpoint."""

    kind, what, record_name, checkpoints, summary_name = KIND, "generator train", RECORD, CHECKPOINTS, SUMMARY
    header, version = {"format": FORMAT}, 1
    products = (MODEL,)
    noun, resumable, fresh = "a generator run", "generator checkpoint", "a new run"
    fix = "resume with the original options, --lm, --corpus and --init-from, or start a new --run"

    def complete(self) -> bool:
        from tokalign.generate.model_folder import incomplete_reason

        model = self.folder / MODEL
        damage = incomplete_reason(model)
        if damage is not None and model.exists():
            log.warning("%s is incomplete (%s); saving it again from the last checkpoint", model, damage)
        return damage is None and self.read_summary() is not None


def lifecycle(config, main: bool) -> GeneratorRun:
    """The lifecycle of the run ``config`` describes (a :class:`GeneratorTrainConfig`)."""
    return GeneratorRun(config.run.run_dir, resume=config.run.resume, trajectory=config.trajectory(),
                        inputs=(config.data.corpus, config.model.init_from), main=main)


# ------------------------------------------------------------------ inputs by content (cheap, before any load)
def input_identities(corpus_root: Path, lm_spec: str) -> dict[str, Any]:
    """What identifies the run's inputs without loading the LM: the corpus by content (its fingerprint, not its
    path) and the LM by how it resolves (spec and identity; None when it does not resolve)."""
    from tokalign.align.lm.load import resolve_lm_spec

    try:
        lm = {"spec": str(lm_spec), "identity": _lm_key(resolve_lm_spec(str(lm_spec)).identity)}
    except TokalignError:
        lm = {"spec": str(lm_spec), "identity": None}
    return {"corpus": corpus_identity(corpus_root), "lm": lm}


def corpus_identity(corpus_root: Path) -> dict[str, Any]:
    """The corpus by content: its item count and fingerprint (:func:`tokalign.align.formats.corpus.corpus_fingerprint`)."""
    from tokalign.align.formats.corpus import corpus_fingerprint, open_corpus

    corpus = open_corpus(corpus_root)
    return {"items": corpus.items, **corpus_fingerprint(corpus)}


def _lm_key(identity: dict) -> dict:
    return {k: v for k, v in identity.items() if k != "spec"}


def _legacy_corpus(run: Path) -> dict | None:
    """The corpus content a run written before ``inputs`` was recorded trained on: its sequences' record."""
    try:
        from tokalign.generate.sequences.build import RECORD as SEQUENCES_RECORD

        body = json.loads((run / SEQUENCES / SEQUENCES_RECORD).read_text(encoding="utf-8"))
        corpus = dict(body["corpus"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    corpus.pop("path", None)
    return corpus


def check_resume_inputs(run: Path, now: dict[str, Any]) -> None:
    """Refuse (one line, before any load) a ``--resume`` on another corpus, or with an LM that is surely not the
    run's: another spec, resolving to another identity, while the run's own spec still resolves."""
    saved = (read_record(run) or {}).get("inputs") or {}
    corpus = saved.get("corpus") or _legacy_corpus(run)
    if corpus is not None and corpus != now["corpus"]:
        what = (f"{corpus.get('items')} items (run) vs {now['corpus']['items']} (now)"
                if corpus.get("items") != now["corpus"]["items"] else "same size, other content")
        raise TokalignError(f"--resume with another --corpus than the run's ({what}): a run continues only on the "
                            "corpus it started with (found by content, wherever it lies); pass that corpus, or start "
                            "a new --run")
    _check_lm(saved.get("lm"), now["lm"])


def _check_lm(saved: dict | None, now: dict) -> None:
    if not saved or saved.get("spec") == now["spec"] or saved.get("identity") is None:
        return
    if now["identity"] is not None and now["identity"] == saved["identity"]:
        return  # another spelling of the same LM
    from tokalign.align.lm.load import resolve_lm_spec

    try:
        still = _lm_key(resolve_lm_spec(saved["spec"]).identity) == saved["identity"]
    except TokalignError:
        still = False  # the run's LM moved: only its embeddings (after the load) can tell
    if still:
        raise TokalignError(f"--lm {now['spec']} is not the LM this run was trained from ({saved['spec']}): "
                            f"--lm {now['spec']} (now) vs {saved['spec']} (run); resume with --lm {saved['spec']}")


def drop_stale_sequences(run: Path, data, lm_spec: str, fresh: bool) -> None:
    """Remove the run's own ``sequences/`` cache when it cannot serve this invocation, so the build remakes it:
    built for another ``--seq-len``, ``--mode`` or corpus content, damaged, or (on a fresh start, when the run has
    no checkpoint) made under another ``--lm``.  A folder holding anything tokalign did not write is kept (the
    build then refuses it)."""
    import shutil

    from tokalign.generate.sequences import build as sq

    folder = Path(run) / SEQUENCES
    if not folder.is_dir() or any(n not in sq.OWN_FILES and not atomic.is_temp_name(n) for n in os.listdir(folder)):
        return
    try:
        record = json.loads((folder / sq.RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = None
    reason = "damaged" if not isinstance(record, dict) else None
    if reason is None:
        want = {"seq_len": data.seq_len, "mode": data.mode, "corpus": corpus_identity(data.corpus)}
        stale = sq.stale_keys(record, want)
        previous = ((read_record(Path(run)) or {}).get("config") or {}).get("model", {}).get("lm")
        if fresh and previous is not None and previous != str(lm_spec):
            stale.append("lm")
        reason = f"built for another {', '.join(stale)}" if stale else None
    if reason is not None:
        log.info("rebuilding %s (%s)", folder, reason)
        shutil.rmtree(folder)


def check_seq_len(seq_len: int, lm_spec: str) -> None:
    """Refuse a ``--seq-len`` beyond the LM's position limit, read from its ``config.json`` (no weights loaded);
    an LM whose config is not at hand is checked when it loads."""
    from tokalign.align.lm.load import HF_CONFIG, resolve_lm_spec

    try:
        identity = resolve_lm_spec(str(lm_spec)).identity
        config = json.loads((Path(identity["path"]) / HF_CONFIG).read_text(encoding="utf-8"))
    except (TokalignError, KeyError, TypeError, OSError, ValueError):
        return
    check_positions(seq_len, next((config[k] for k in ("max_position_embeddings", "n_positions", "max_sequence_length")
                                   if isinstance(config.get(k), int)), None), lm_spec)


def check_positions(seq_len: int, limit: int | None, lm_spec: str) -> None:
    """Refuse ``seq_len`` beyond the LM's ``limit`` positions (None: unknown, accepted); also run after the load
    for an LM whose config was not at hand before it (a gguf file, a hub id)."""
    if isinstance(limit, int) and seq_len > limit:
        raise TokalignError(f"--seq-len {seq_len} does not fit the LM {lm_spec}, which has {limit} positions "
                            f"(max_position_embeddings); pass --seq-len {limit} or less")


def read_summary(run: Path) -> dict[str, Any] | None:
    """The run's ``summary.json`` (written just before the model folder), or None."""
    return GeneratorRun(run, resume=False, trajectory={}).read_summary()


def final_figures(run: Path, step: int) -> tuple[dict[str, Any], float] | None:
    """The final held-out figures and rate a run already logged at ``step`` (summary first, else its held-out row
    in ``metrics.jsonl`` and the mean rate of its training rows), or None when it logged none."""
    from tokalign.align.training.metrics import read_metrics

    summary = read_summary(run)
    if summary is not None and summary.get("steps") == step and summary.get("final"):
        return dict(summary["final"]), float(summary.get("tokens_per_s") or 0.0)
    rows = read_metrics(Path(run) / METRICS)
    final = [r for r in rows if r.get("split") == "heldout" and r.get("step") == step]
    if not final:
        return None
    rates = [r["tokens_per_s"] for r in rows if r.get("split") == "train" and isinstance(r.get("tokens_per_s"), (int, float))]
    figures = {k: v for k, v in final[-1].items() if k not in ("step", "split")}
    return figures, (sum(rates) / len(rates) if rates else 0.0)
