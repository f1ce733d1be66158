"""The base LM's probe results, cached: probing several generators of one LM loads the LM once.

The base LM's figures depend only on the LM (its spec's identity, which pins the weights cheaply: path, size and
mtime of the files, or a hub commit), the decoder layers kept, the token ids scored, the prompts and the
settings, so they are stored under ``<cache root>/probe/base-<sha256 of those>.json`` (the cache root of
:func:`tokalign.align.lm.load.default_cache_root`, or ``--cache-dir``). A hit skips loading the LM; its input
rows (for the image-row probe) then come from the frozen-LM cache that ``fit`` fills.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from tokalign.align.formats import atomic

log = logging.getLogger(__name__)
VERSION = 1


def cache_path(root: Path, identity: dict, layers: int, ids: list[int], prompts: Any, settings: dict) -> Path:
    key = {"version": VERSION, "identity": {k: v for k, v in identity.items() if k != "spec"}, "layers": int(layers),
           "ids": hashlib.sha256(json.dumps(list(ids)).encode()).hexdigest(), "prompts": repr(prompts),
           "settings": settings}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:24]
    return Path(root) / "probe" / f"base-{digest}.json"


def read(path: Path) -> dict[str, Any] | None:
    try:
        body = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(body, dict) or body.get("version") != VERSION or not {"base", "language"} <= set(body):
        return None
    log.info("base LM figures from the cache (%s)", path)
    return body


def write(path: Path, base: dict[str, Any], language: dict[str, Any]) -> None:
    try:
        atomic.write_json(path, {"version": VERSION, "base": base, "language": language})
    except OSError as exc:  # a read-only cache only costs time
        log.warning("cannot cache the base LM's figures in %s (%s)", path, exc.strerror or exc)
