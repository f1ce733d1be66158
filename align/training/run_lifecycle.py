"""The lifecycle of a run, written once for every kind of run (the fit, the generator, a study).

A kind of run is a subclass of :class:`RunLifecycle` that says only what is its own, as class attributes and
small hooks: its output kind, the names of its record, checkpoint folder and summary (from its format module), the mark its record carries, the names that show it has made
something, the words of its refusals, its trajectory (the settings a ``--resume`` must find unchanged), when its
final products are whole (:meth:`RunLifecycle.complete`) and, where it differs, how its changed settings are
named (:meth:`RunLifecycle.changes`).  Everything else lives here:

* claiming, locking and marking the folder (:meth:`RunLifecycle.writing`, through the output rule of
  :mod:`tokalign.align.formats.outputs` and the lock of :func:`tokalign.align.formats.lock.writing_folder`);
  a refusal comes before anything is created and leaves nothing behind;
* finding the resume point (:meth:`RunLifecycle.resume_point`): a run that has made something is continued only
  with ``--resume``, one stopped before its first checkpoint starts again, ``--resume`` of nothing is refused;
* checking the trajectory and the inputs' identities against the record (one line naming each option);
* noticing an already finished run (:meth:`RunLifecycle.finished`);
* writing and reading the record and the summary;
* when a step is due (:func:`due`), where an invocation ends (:func:`end_step`) and saving a checkpoint from
  the main process (:meth:`RunLifecycle.save_checkpoint`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from tokalign.align.errors import TokalignError
from tokalign.align.formats import atomic
from tokalign.align.formats.lock import writing_folder

log = logging.getLogger(__name__)

def due(step: int, every: int, end: int) -> bool:
    """Is something done every ``every`` steps due after ``step`` steps (always at the invocation's ``end``)?"""
    return step % every == 0 or step == end


def end_step(start: int, steps: int, stop_after: int | None) -> int:
    """The step an invocation that starts at ``start`` stops at: the run's end, or ``stop_after`` steps later."""
    return steps if stop_after is None else min(steps, start + stop_after)


class RunLifecycle:
    """One run folder's claim, lock, mark, resume point, checks, record and summary (module docstring)."""

    kind: str = ""  #: the output kind its marker names (outputs.FIT_RUN, "generator-run", ...)
    what: str = ""  #: the lock's label ("fit", "generator train", "experiment")
    record_name: str = ""  #: the record file inside the folder
    header: Mapping[str, Any] = {}  #: the fields that mark the record as this kind's ({}: any JSON object)
    version: int | None = None  #: the record's format version, written (not checked) when set
    trajectory_key: str = "trajectory"  #: where the record keeps the trajectory
    option: str = "--run"  #: the option that names the folder
    checkpoints: str | None = None  #: the checkpoint folder (None: the kind has none)
    summary_name: str | None = None  #: the summary file (None: the kind has none)
    products: tuple[str, ...] = ()  #: names whose presence shows the run has made something
    noun: str = "a run"  #: "--run X already holds <noun>"
    resumable: str = "checkpoint"  #: "nothing to resume in X: it holds no <resumable>"
    fresh: str = "a new run"  #: "drop --resume to start <fresh>"
    fix: str = "resume with the original options, or start a new --run"

    def __init__(self, folder: Path, *, resume: bool, trajectory: dict[str, Any], inputs: Iterable[Path | None] = (),
                 main: bool = True) -> None:
        self.folder, self.resume, self.trajectory = Path(folder), resume, trajectory
        self.inputs = tuple(Path(p) for p in inputs if p is not None)
        self.main = main

    # ------------------------------------------------------------ hooks a kind may override
    def held(self, saved: dict[str, Any]) -> str:
        """What the folder holds, for the refusal of a fresh start over it."""
        return self.noun

    def changes(self, saved: dict[str, Any], trajectory: dict[str, Any], identities: dict[str, Any]) -> str | None:
        """The one-line refusal of a resume whose settings or inputs differ from the record, or None."""
        return differences_message(saved, trajectory, identities, self.fix)

    def complete(self) -> bool:
        """Are the run's final products whole (then a finished run is not redone)?"""
        return all((self.folder / name).exists() for name in self.products)

    # ------------------------------------------------------------ the folder
    @contextlib.contextmanager
    def writing(self) -> Iterator[Path | None]:
        """Claim, create, lock and mark the folder for the block (the main process; the others only claim);
        yield the checkpoint to resume from (None: a fresh start), its trajectory checked."""
        from tokalign.align.formats import outputs

        outputs.claim_output_dir(self.folder, self.kind, inputs=self.inputs, option=self.option)
        self.resume_point()  # refuse before anything is created
        with writing_folder(self.folder, self.kind, what=self.what, inputs=self.inputs, option=self.option,
                            subfolders=(self.checkpoints,) if self.checkpoints else (), lock=self.main):
            resume_from = self.resume_point()  # again, now that the folder is ours
            if resume_from is not None:
                self.check(self.trajectory, {})
            yield resume_from

    def resume_point(self) -> Path | None:
        """The checkpoint ``--resume`` continues from (the folder itself for a kind without checkpoints), or None
        for a fresh start; refuses what cannot be done."""
        saved = self.read_record()
        checkpoints = self._checkpoints()
        if not self.resume:
            made = checkpoints or any((self.folder / name).exists() for name in self.products)
            if saved is not None and made:
                raise TokalignError(f"{self.option} {self.folder} already holds {self.held(saved)}; pass --resume to "
                                    f"continue it or choose another {self.option}")
            return None
        if saved is None or (self.checkpoints is not None and not checkpoints):
            raise TokalignError(f"nothing to resume in {self.folder}: it holds no {self.resumable}; drop --resume to "
                                f"start {self.fresh}")
        return checkpoints[-1] if checkpoints else self.folder

    def _checkpoints(self) -> list[Path]:
        if self.checkpoints is None:
            return []
        from tokalign.align.training.checkpoint import list_checkpoints

        return list_checkpoints(self.folder / self.checkpoints)

    def check(self, trajectory: dict[str, Any], identities: dict[str, Any]) -> None:
        """Refuse (one line) a resume whose trajectory or input identities differ from the record's."""
        message = self.changes(self.read_record() or {}, trajectory, identities)
        if message is not None:
            raise TokalignError(message)

    def check_identities(self, identities: dict[str, Any]) -> None:
        """The inputs, once loaded, must be the ones the run started with (by identity)."""
        self.check({}, identities)

    def finished(self, checkpoint: Path | None, steps: int) -> dict[str, Any] | None:
        """The summary of a run already finished at ``steps`` (last checkpoint, summary and products whole), else
        None: something is left to do."""
        if checkpoint is None or checkpoint.name != f"step_{steps}" or not self.complete():
            return None
        summary = self.read_summary()
        if summary is not None:
            log.info("%s already finished all %d steps; nothing to resume", self.folder, steps)
        return summary

    # ------------------------------------------------------------ the record and the summary
    def read_record(self) -> dict[str, Any] | None:
        """The folder's record when it is this kind's, else None."""
        body = _read_object(self.folder / self.record_name)
        if body is None or any(body.get(k) != v for k, v in self.header.items()):
            return None
        return body

    def write_record(self, body: dict[str, Any]) -> None:
        """Write the record: the kind's mark, the trajectory, then ``body``."""
        version = {} if self.version is None else {"version": self.version}
        atomic.write_json(self.folder / self.record_name,
                          {**self.header, **version, self.trajectory_key: self.trajectory, **body})

    def read_summary(self) -> dict[str, Any] | None:
        return _read_object(self.folder / self.summary_name) if self.summary_name else None

    def write_summary(self, body: dict[str, Any]) -> None:
        atomic.write_json(self.folder / self.summary_name, body)

    # ------------------------------------------------------------ checkpoints
    def save_checkpoint(self, accelerator, step: int, model, optimizer, keep: int, info: dict[str, Any] | None = None,
                        extra: dict | None = None) -> None:
        """Save ``step`` from the main process (the trajectory recorded with ``info``); every process waits."""
        if accelerator.is_main_process:
            from tokalign.align.training.checkpoint import save_checkpoint

            save_checkpoint(self.folder / self.checkpoints, step, model, optimizer,
                            {"trajectory": self.trajectory, **(info or {})}, keep, extra=extra)
        accelerator.wait_for_everyone()


def _read_object(path: Path) -> dict[str, Any] | None:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


# ------------------------------------------------------------------ naming what differs
_IDENTITY_OPTIONS = {"lm_embedding_sha256": "--lm (its embeddings)", "text_tokenizer_sha256": "--lm (its tokenizer)",
                     "corpus": "--corpus", "init_from": "--init-from"}
_DERIVED = {"global_sequences": "--batch-tokens (sequences per step)"}


def differences_message(saved: dict[str, Any], trajectory: dict[str, Any], identities: dict[str, Any],
                        fix: str) -> str | None:
    """``--resume with settings or inputs that differ from the run's (keys): --opt RUN (run) vs NOW (now); fix``,
    or None when nothing differs."""
    changed = [k for k in trajectory if saved.get("trajectory", {}).get(k) != trajectory[k]]
    changed += [k for k in identities if saved.get("identities", {}).get(k) != identities[k]]
    if not changed:
        return None
    details = _differences(saved.get("trajectory", {}), trajectory, saved.get("identities", {}), identities)
    return (f"--resume with settings or inputs that differ from the run's ({', '.join(changed)})"
            f"{': ' + '; '.join(details) if details else ''}; {fix}")


def _leaves(body: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(body, dict):
        out: dict[tuple[str, ...], Any] = {}
        for key, value in body.items():
            out.update(_leaves(value, (*prefix, str(key))))
        return out
    return {prefix: body}


def _option(path: tuple[str, ...]) -> str:
    return _DERIVED.get(path[-1], "--" + path[-1].replace("_", "-"))


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "unset" if value is None else str(value)


def _differences(run_traj: dict, now_traj: dict, run_ids: dict, now_ids: dict) -> list[str]:
    """``--option RUN (run) vs NOW (now)`` for every setting that differs, then the inputs by option."""
    old, new = _leaves(run_traj), _leaves(now_traj)
    lines = [f"{_option(k)} {_shown(old.get(k))} (run) vs {_shown(new.get(k))} (now)"
             for k in new if k in old and old[k] != new[k]]
    lines += [f"{_IDENTITY_OPTIONS.get(k, k)} is not the run's" for k in now_ids if run_ids.get(k) != now_ids[k]]
    return lines
