"""The output folder of ``tokalign tokenize`` while it is being built: part records, resuming, finishing.

The corpus is written in place, part by part.  For part ``i`` the pipeline
writes, each atomically and in this order:

* ``shards/shard-{i:05d}.safetensors`` and ``.jsonl`` (the corpus shard; none
  when every item of the part was skipped),
* ``shards/shard-{i:05d}.skipped.jsonl`` and ``.adjusted.jsonl``,
* ``shards/shard-{i:05d}.part.json`` last: the part's fingerprint, its shard
  entry and its counts.  A part is done exactly when this file exists, its
  fingerprint matches the input and its shard has the recorded size.

``tokenize.json`` (written before any part) records what the run is: source,
image and text tokenizer identities and preprocessing.  ``--resume`` refuses
to continue a folder whose ``tokenize.json`` differs from the new run, and
skips done parts, so no sample is ever written twice.  ``finish`` gathers the
part records in part order into ``skipped.jsonl``, ``adjusted.jsonl`` and
``manifest.json`` (last: a folder with a manifest is a complete corpus), then
removes the per-part bookkeeping; the run's identity stays in the folder's
marker (``.tokalign.json``), so a ``--resume`` with other options is refused
even after the corpus is complete.

The folder follows the output rule and is locked while written
(``tokalign.align.formats.outputs``, ``lock``).  Start-up order: the marker,
the k-means codebook, ``tokenize.json``, then ``shards/``: a folder killed in
between is marked but has no state, and starts again (fresh) on the next run.
Paths in fingerprints are compared as absolute paths (:func:`canonical`), so
``--resume`` accepts the same input given relatively or absolutely.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from tokalign.align.formats import atomic, outputs
from tokalign.align.formats.faults import crash_point
from tokalign.align.formats.corpus import MANIFEST, SHARDS, write_manifest
from tokalign.align.image_tokenizers.registry import KMEANS_FILE
from tokalign.align.errors import TokalignError
from tokalign.align.sources.samples import Part

log = logging.getLogger(__name__)
STATE = "tokenize.json"
STATE_FORMAT = "tokalign-tokenize-state"
SKIPPED, ADJUSTED = "skipped.jsonl", "adjusted.jsonl"
outputs.register_kind(outputs.CORPUS, owned=(SKIPPED, ADJUSTED, KMEANS_FILE, STATE),
                      signature=(STATE, "format", lambda v: v == STATE_FORMAT))


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


_PATH_KEYS = frozenset({"folder", "url", "file", "captions", "input", "path", "files"})


def canonical(value: Any, key: str | None = None) -> Any:
    """JSON ``value`` with local paths (under path-like keys) made absolute: how fingerprints are compared."""
    from tokalign.align.sources.spec import is_remote

    if isinstance(value, dict):
        return {k: canonical(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [canonical(v, key) for v in value]
    if isinstance(value, str) and key in _PATH_KEYS and value and not is_remote(value):
        return os.path.abspath(value)
    return value


def _same(a: Any, b: Any) -> bool:
    return canonical(json.loads(json.dumps(a))) == canonical(b)


def clear_folder(out: Path) -> None:
    """Remove what a corpus owns in ``out`` (--force, or a start-up left unfinished); the marker, the lock and
    files tokalign did not write stay (:func:`tokalign.align.formats.outputs.foreign_entries`)."""
    foreign = set(outputs.foreign_entries(out, outputs.CORPUS))
    if foreign:
        log.info("%s: keeping %d file(s) tokalign did not write (%s)", out, len(foreign), ", ".join(sorted(foreign)[:3]))
    for name in outputs.user_entries(out):
        if name in foreign:
            continue
        path = out / name
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def prepare_out(out: Path, *, resume: bool, force: bool) -> str:
    """Return "fresh", "resume" or "complete" for folder ``out``, already claimed and locked (pipeline.py).

    A folder with neither a manifest nor a state file (new, empty, killed in its start-up window, or
    replaced with --force) is cleared and starts fresh.
    """
    if force or not ((out / MANIFEST).is_file() or (out / STATE).is_file()):
        clear_folder(out)
        return "fresh"
    if (out / MANIFEST).is_file():
        if resume:
            return "complete"
        raise TokalignError(f"{out} already holds a corpus; pass --force to rebuild it, or choose another --out")
    if not resume:
        raise TokalignError(f"{out} holds an unfinished tokenize run; pass --resume to continue it or --force to start over")
    return "resume"


def write_state(out: Path, state: dict) -> None:
    atomic.write_json(out / STATE, dict(format=STATE_FORMAT, **canonical(json.loads(json.dumps(state)))))


def check_state(out: Path, state: dict, old: dict | None = None) -> None:
    """Refuse to resume a run that was made from other input or with other tokenizers (``old``: its state)."""
    if old is None:
        try:
            old = json.loads((out / STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise TokalignError(f"{out / STATE} is unreadable; pass --force to start over") from None
    for key, value in state.items():
        if key in old and not _same(value, old.get(key)):
            raise TokalignError(f"cannot resume {out}: its {key.replace('_', ' ')} differs from this run's "
                                "(other input, tokenizer or options); pass the original options, or --force to start over")


def check_complete(out: Path, state: dict, manifest: dict) -> None:
    """Refuse ``--resume`` on a finished corpus made with other input or options (instead of "nothing to do")."""
    old = (outputs.read_marker(out) or {}).get("tokenize")
    if not isinstance(old, dict):  # a corpus from before the marker kept it: compare the manifest's fields
        source = dict(manifest.get("source") or {})
        old = {"image_tokenizer": manifest.get("image_tokenizer"), "text_tokenizer": manifest.get("text_tokenizer"),
               "tokens_per_image": manifest.get("tokens_per_image"), "preprocessing": source.pop("preprocessing", None),
               "source": source}
    check_state(out, state, old)


def write_started(out: Path, state: dict) -> None:
    """The state file (before ``shards/``): from here on the folder is a resumable run."""
    crash_point("tokenize:startup")
    write_state(out, state)
    (out / SHARDS).mkdir(parents=True, exist_ok=True)


def part_done(out: Path, part: Part) -> bool:
    """True when ``part`` was finished by an earlier run (record present, same input, shard intact)."""
    path = out / SHARDS / f"{shard_name(part.index)}.part.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not _same(part.fingerprint, record.get("fingerprint")):
        return False
    entry = record.get("shard")
    if entry is None:
        return True
    shard = out / SHARDS / f"{entry['name']}.safetensors"
    return shard.is_file() and shard.stat().st_size == entry["bytes"]


def write_part_record(out: Path, part: Part, shard: dict | None, skipped: list[dict], adjusted: list[dict]) -> None:
    """The part's skip/adjust lists, then its record (which marks it done)."""
    stem = out / SHARDS / shard_name(part.index)
    crash_point(f"tokenize:part:{part.index}")
    atomic.write_text(f"{stem}.skipped.jsonl", _jsonl(skipped))
    atomic.write_text(f"{stem}.adjusted.jsonl", _jsonl(adjusted))
    atomic.write_json(f"{stem}.part.json", {
        "index": part.index, "name": part.name, "fingerprint": part.fingerprint, "shard": shard,
        "skipped": _counts(skipped), "adjusted": _counts(adjusted),
    })


def finish(out: Path, parts: list[Part], manifest_fields: dict[str, Any]) -> dict:
    """Assemble the manifest from every part record; write it last; return it."""
    shards, skipped, adjusted, skip_lines, adjust_lines = [], {}, {}, [], []
    for part in parts:
        stem = out / SHARDS / shard_name(part.index)
        record = json.loads(Path(f"{stem}.part.json").read_text(encoding="utf-8"))
        if record["shard"] is not None:
            shards.append(record["shard"])
        _add(skipped, record["skipped"])
        _add(adjusted, record["adjusted"])
        skip_lines.append(Path(f"{stem}.skipped.jsonl").read_text(encoding="utf-8"))
        adjust_lines.append(Path(f"{stem}.adjusted.jsonl").read_text(encoding="utf-8"))
    atomic.write_text(out / SKIPPED, "".join(skip_lines))
    atomic.write_text(out / ADJUSTED, "".join(adjust_lines))
    crash_point("tokenize:finish")
    outputs.write_marker(out, outputs.CORPUS, tokenize=canonical(json.loads((out / STATE).read_text(encoding="utf-8"))))
    manifest = write_manifest(out, shards=shards, skipped=skipped, adjusted=adjusted, **manifest_fields)
    for part in parts:
        stem = out / SHARDS / shard_name(part.index)
        for suffix in (".part.json", ".skipped.jsonl", ".adjusted.jsonl"):
            Path(f"{stem}{suffix}").unlink(missing_ok=True)
    (out / STATE).unlink(missing_ok=True)
    return manifest


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _counts(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        for reason in row["reasons"] if "reasons" in row else [row["reason"]]:
            counts[reason] = counts.get(reason, 0) + 1
    return dict(sorted(counts.items()))


def _add(total: dict[str, int], counts: dict[str, int]) -> None:
    for reason, n in counts.items():
        total[reason] = total.get(reason, 0) + n
