"""``tokalign tokenize``: image-caption data in, a corpus (format v1, ``tokalign.align.formats.corpus``) out.

Stages, for :func:`tokenize_corpus`:

1. open the source (``spec.py``) and cut it into parts; build the image
   tokenizer (``tokalign.align.image_tokenizers.registry``) and load the LM whose tokenizer
   encodes the captions; all user errors surface here, before any output;
2. check the output folder (fresh, resumable or complete: ``state.py``);
   for ``kmeans --fit-codebook`` fit the codebook on the first usable images;
3. stream the parts not yet done through DataLoader workers
   (``loader.py``: read, check, decode, preprocess) and encode their
   images in batches on the GPU when there is one; each finished part becomes
   one shard plus its skip/adjust records, written atomically;
4. once every part is done, write ``skipped.jsonl``, ``adjusted.jsonl`` and
   the manifest.

Memory holds the tokens of the parts in flight (2 KB per image), never the
dataset.  An interrupted run continues with ``resume=True``: finished parts
are kept and never re-read, so no sample is written twice.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tokalign.align.tokenize import state
from tokalign.align.formats import outputs
from tokalign.align.formats.corpus import SHARDS, write_shard
from tokalign.align.formats.lock import writing_folder
from tokalign.align.errors import TokalignError
from tokalign.align.image_tokenizers.protocol import SavableTokenizer, TensorEncoder
from tokalign.align.image_tokenizers.registry import KMEANS_FILE, Pretokenized, build_image_tokenizer, pretokenized_mismatch
from tokalign.align.sources.keys import escape_key
from tokalign.align.sources.samples import Part
from tokalign.align.sources.spec import open_source
from tokalign.align.tokenize.config import TokenizeConfig
from tokalign.align.training.progress import progress_bar
from tokalign.align.tokenize.loader import PartBatch, PartStream, PrepSettings, collate_none, part_batches, worker_init

log = logging.getLogger(__name__)


@dataclass
class TokenizeResult:
    out: Path
    complete: bool
    parts_total: int
    parts_done: int  # finished by this call
    manifest: dict | None = None


@dataclass
class _PartBuffer:
    tokens: list[np.ndarray] = field(default_factory=list)
    ids: list[list[int]] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    adjusted: list[dict] = field(default_factory=list)


def tokenize_corpus(config: TokenizeConfig) -> TokenizeResult:
    """Build (or continue building) the corpus ``config`` describes."""
    from tokalign.align.lm.captions import text_tokenizer_identity
    from tokalign.align.lm.load import load_frozen_lm

    source = open_source(config.source)
    parts = source.parts()
    if not parts:
        raise TokalignError(f"--input {config.source.input} holds no data; check the path or pattern")
    tokenizer = None if config.fit_codebook else build_image_tokenizer(
        config.image_tokenizer, config.image_tokenizer_path, device=config.device, dtype=config.dtype,
        batch_size=config.batch_size, codebook_size=config.codebook_size, grid=config.grid)
    lm = load_frozen_lm(config.lm, config.cache_root)
    if tokenizer is not None and config.image_tokenizer == "pretokenized":
        _preflight_tokens(source, parts, tokenizer)
    with writing_folder(config.out, outputs.CORPUS, what="tokenize", inputs=_local_inputs(config, parts), subfolders=(SHARDS,)):
        return _tokenize(config, source, parts, tokenizer, lm, text_tokenizer_identity(lm))


def _local_inputs(config: TokenizeConfig, parts: list[Part]) -> tuple[Path, ...]:
    """Every local input path --out must keep clear of: the --input path, each part's local file (a brace
    pattern or glob names no single path) and the --captions file."""
    from tokalign.align.sources.spec import is_remote

    candidates = [str(config.source.input), config.source.captions_file]
    candidates += [p.locator for p in parts if isinstance(p.locator, (str, Path))]
    found = {Path(c) for c in candidates if c and not is_remote(str(c)) and Path(c).exists()}
    return tuple(sorted(found))


def _tokenize(config: TokenizeConfig, source, parts: list[Part], tokenizer, lm, text_identity: dict) -> TokenizeResult:
    """The run proper, in the claimed and locked output folder."""
    mode = state.prepare_out(config.out, resume=config.resume, force=config.force)
    if config.fit_codebook:
        tokenizer = _codebook(config, source, parts, "resume" if mode == "complete" else mode)
    run_state = _run_state(config, source, parts, tokenizer, text_identity)
    if mode == "complete":
        from tokalign.align.formats.corpus import open_corpus

        manifest = open_corpus(config.out).manifest
        state.check_complete(config.out, run_state, manifest)
        log.info("%s is already a complete corpus made with these options; nothing to do", config.out)
        return TokenizeResult(config.out, True, len(parts), 0, manifest)
    if mode == "fresh":
        _start(config.out, tokenizer, run_state)
    else:
        state.check_state(config.out, run_state)
    pending = [p for p in parts if not state.part_done(config.out, p)]
    log.info("%d of %d parts to tokenize into %s", len(pending), len(parts), config.out)
    done = _run(config, source, pending, tokenizer, lm, len(parts) - len(pending), len(parts)) if pending else 0
    if done < len(pending):
        log.info("stopped after %d parts; continue with --resume", done)
        return TokenizeResult(config.out, False, len(parts), done)
    fields = {k: run_state[k] for k in ("tokens_per_image", "image_tokenizer", "text_tokenizer")}
    fields["source"] = dict(run_state["source"], preprocessing=run_state["preprocessing"])
    manifest = state.finish(config.out, parts, fields)
    return TokenizeResult(config.out, True, len(parts), done, manifest)


def _run_state(config: TokenizeConfig, source, parts: list[Part], tokenizer, text_identity: dict) -> dict:
    """What this run is (tokenize.json): input, tokenizers, preprocessing; resume compares it."""
    identity = tokenizer.identity()
    if tokenizer.kind == "kmeans" or identity.get("kind") == "kmeans":
        identity["file"] = KMEANS_FILE
    return {"source": source.describe(), "parts": [p.fingerprint for p in parts], "image_tokenizer": identity,
            "text_tokenizer": text_identity, "tokens_per_image": tokenizer.tokens_per_image,
            "preprocessing": {"image_size": config.image_size, "min_side": config.min_side,
                              "resize": "shorter side, bicubic", "crop": "centre", "mode": "RGB"}}


def _start(out: Path, tokenizer, run_state: dict) -> None:
    """Start-up, in the order state.py documents: (marker,) codebook, state file, ``shards/``."""
    kept = tokenizer.decoder if isinstance(tokenizer, Pretokenized) else tokenizer
    if run_state["image_tokenizer"].get("file") and isinstance(kept, SavableTokenizer):
        kept.save(out / KMEANS_FILE)  # the corpus keeps its (small) k-means codebook
    state.write_started(out, run_state)


def _preflight_tokens(source, parts: list[Part], tokenizer) -> None:
    """Refuse a mismatched pretokenized input before writing anything (its first token array)."""
    for sample in source.read(parts[0]):
        if sample.skip is None and sample.image is not None:
            problem = tokenizer.check(sample.image) if isinstance(sample.image, np.ndarray) else "is not a token array"
            if problem:
                raise TokalignError(pretokenized_mismatch(repr(sample.key), problem))
            return


def _codebook(config: TokenizeConfig, source, parts: list[Part], mode: str):
    """The k-means tokenizer for --fit-codebook: the one saved by the interrupted run, or a new fit."""
    from tokalign.align.image_tokenizers.kmeans import PatchKMeansTokenizer

    saved = config.out / KMEANS_FILE
    if mode == "resume" and saved.is_file():
        tokenizer = PatchKMeansTokenizer.load(saved)
        if tokenizer.codebook_size != config.codebook_size:
            raise TokalignError(f"cannot resume {config.out}: its image tokenizer differs from this run's (a "
                                f"{tokenizer.codebook_size}-code codebook, not --codebook-size {config.codebook_size}); "
                                "rerun with the original options, or choose a new --out")
        return tokenizer
    settings = _settings(config, tokens_per_image=1024, codebook_size=65536)
    images: list[np.ndarray] = []
    skipped: list[dict] = []
    for part in parts:
        for batch in part_batches(source, part, settings):
            skipped.extend(batch.skipped[: SHOWN_SKIPS - len(skipped)])
            if batch.pixels is not None:
                images.extend(batch.pixels.numpy()[: config.codebook_images - len(images)])
            if len(images) >= config.codebook_images:
                break
        if len(images) >= config.codebook_images:
            break
    if not images:
        for row in skipped:
            log.info("skipped %s: %s (%s)", row.get("key"), row.get("reason"), row.get("detail"))
        raise TokalignError(f"--input {config.source.input} has no usable image to fit a codebook on: every item was "
                            f"skipped; first: {skip_summary(skipped)}")
    log.info("fitting a %d-code k-means codebook on %d images", config.codebook_size, len(images))
    return PatchKMeansTokenizer.fit(np.stack(images), codebook_size=config.codebook_size,
                                    iterations=config.kmeans_iterations, seed=config.seed)


SHOWN_SKIPS = 3  #: skip reasons an error about an input with no usable item shows


def skip_summary(skipped: list[dict]) -> str:
    """``key: reason (detail)`` of the first skipped items, for a one-line error."""
    shown = [f"{row.get('key')}: {row.get('reason')} ({str(row.get('detail'))[:160]})" for row in skipped[:SHOWN_SKIPS]]
    return "; ".join(shown) or "no item was read"


def _settings(config: TokenizeConfig, tokens_per_image: int, codebook_size: int) -> PrepSettings:
    return PrepSettings(image_size=config.image_size, min_side=config.min_side, batch_size=config.batch_size,
                        tokens=config.image_tokenizer == "pretokenized", codebook_size=codebook_size,
                        tokens_per_image=tokens_per_image)


def _run(config: TokenizeConfig, source, pending: list[Part], tokenizer, lm, already: int, total: int) -> int:
    """Tokenize ``pending`` parts; return how many were finished (fewer when stopped early)."""
    import torch

    from tokalign.align.lm.load import tokenize_captions

    settings = _settings(config, tokenizer.tokens_per_image, tokenizer.codebook_size)
    workers = min(config.workers, len(pending))
    loader = torch.utils.data.DataLoader(
        PartStream(source, pending, settings), batch_size=None, collate_fn=collate_none, num_workers=workers,
        worker_init_fn=worker_init if workers else None, prefetch_factor=4 if workers else None,
        pin_memory=isinstance(tokenizer, TensorEncoder) and str(tokenizer.device).startswith("cuda"))
    buffers: dict[int, _PartBuffer] = {}
    by_index = {p.index: p for p in pending}
    progress = _Progress(config.progress, already, total)
    done = 0
    try:
        for batch in loader:
            if batch.fatal:
                raise TokalignError(f"{batch.fatal}; the {already + done} finished parts are kept (fix and pass --resume)")
            buf = buffers.setdefault(batch.part, _PartBuffer())
            _absorb(buf, batch, _encode(tokenizer, batch), tokenize_captions(lm.tokenizer, batch.captions))
            progress.update(batch)
            if batch.last:
                _write_part(config.out, by_index[batch.part], buffers.pop(batch.part))
                done += 1
                progress.part_done()
                if config.stop_after_parts is not None and done >= config.stop_after_parts:
                    break
    finally:
        progress.close()
    return done


def _encode(tokenizer, batch: PartBatch) -> np.ndarray | None:
    if batch.tokens is not None:
        return batch.tokens
    if batch.pixels is None:
        return None
    if isinstance(tokenizer, TensorEncoder):
        return tokenizer.encode_tensor(batch.pixels).cpu().numpy().astype(np.uint16)
    return tokenizer.encode(batch.pixels.numpy())


def _absorb(buf: _PartBuffer, batch: PartBatch, tokens: np.ndarray | None, ids: list[list[int]]) -> None:
    buf.skipped.extend(batch.skipped)
    buf.adjusted.extend(batch.adjusted)
    for i, key in enumerate(batch.keys):
        if not ids[i]:  # e.g. a caption of only characters the text tokenizer drops
            buf.skipped.append({"key": key, "part": None, "reason": "empty_caption", "detail": "caption has no text tokens"})
            continue
        buf.tokens.append(tokens[i])
        buf.ids.append(ids[i])
        buf.captions.append(batch.captions[i])
        buf.keys.append(key)


def _write_part(out: Path, part: Part, buf: _PartBuffer) -> None:
    shard = None
    if buf.keys:
        shard = write_shard(out / SHARDS, state.shard_name(part.index), np.stack(buf.tokens), buf.ids,
                            buf.captions, buf.keys)
    for row in buf.skipped:
        row["part"] = escape_key(part.name)
    kept = set(buf.keys)
    adjusted = [row for row in buf.adjusted if row["key"] in kept]  # minus items dropped after preprocessing
    state.write_part_record(out, part, shard, buf.skipped, adjusted)


class _Progress:
    """A tqdm bar over samples read, with images/s, kept, skipped and parts done."""

    def __init__(self, enabled: bool, already: int, total: int) -> None:
        self.kept, self.skipped, self.parts, self.total = 0, 0, already, total
        self.start = time.perf_counter()
        self.bar = progress_bar(enabled, desc="tokenize", unit="img")
        self._postfix()

    def update(self, batch: PartBatch) -> None:
        self.kept += len(batch.keys)
        self.skipped += len(batch.skipped)
        self.bar.update(batch.read)
        self._postfix()

    def part_done(self) -> None:
        self.parts += 1
        self._postfix()
        log.debug("part %d/%d done (%d kept, %d skipped so far)", self.parts, self.total, self.kept, self.skipped)

    def _postfix(self) -> None:
        self.bar.set_postfix(kept=self.kept, skipped=self.skipped, parts=f"{self.parts}/{self.total}", refresh=False)

    def close(self) -> None:
        self.bar.close()
        seconds = time.perf_counter() - self.start
        log.info("tokenized %d images in %.1f s (%.1f img/s), skipped %d", self.kept, seconds,
                 self.kept / max(seconds, 1e-9), self.skipped)
