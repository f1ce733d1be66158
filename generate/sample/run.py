"""``sample_images(config)``: the one library entry point of ``tokalign generator sample``.

Everything that can fail on a finished sample is settled before sampling: the prompts vs the mode, the grid
labels (:func:`.output.fitted_labels`), the output folder, the image tokenizer (loaded and checked by
:mod:`.decoding`; when the generator's corpus cannot decode, a one-line notice and tokens only), the model
weights and the prompts' token ids. Then it samples in batches of ``batch_size`` images (the fast path of
:mod:`.fast_sampler` where the model allows), and writes the output folder in place (:mod:`.output`): the tokens
first, then PNGs and grid, then ``samples.json``. Image ``(p, s)`` (prompt p, sample s) is drawn from its own
seed, so it is the same whatever the batch size or the other prompts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokalign.align.errors import TokalignError
from tokalign.generate.model_folder import GeneratorRecord, incomplete_reason, read_record
from tokalign.generate.sample import output
from tokalign.generate.sample.config import SampleConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleResult:
    out: Path
    images: int
    grid: Path | None  # None when the samples could not be decoded (tokens only)
    sampling_seconds: float  # token sampling only (model forwards and draws, graph capture included)
    total_seconds: float
    load_seconds: float = 0.0  # checks and model loading, before sampling
    capture_seconds: float = 0.0  # warm-up and CUDA graph capture within sampling_seconds
    path: str = "fast"  # "fast" (static cache) or "reference" (HF forward per step)
    decoded: int = 0  # PNGs written

    @property
    def images_per_second(self) -> float:
        return self.images / self.sampling_seconds if self.sampling_seconds > 0 else float("inf")


def check_request(config: SampleConfig, record: GeneratorRecord) -> None:
    """Refuse prompts for an image-only model, no prompt for a text-to-image one; warn on CFG without dropout."""
    if record.mode == "image-only":
        if config.prompts:
            raise TokalignError(f"{config.model} is an image-only generator (trained without captions); sample it "
                                "without --prompt/--prompts")
        if config.guided:
            raise TokalignError("--cfg-scale needs a text-to-image generator; an image-only one has no condition to "
                                "guide, leave --cfg-scale at 1")
    elif not config.prompts:
        raise TokalignError("pass --prompt TEXT (repeatable) or --prompts FILE; --prompt \"\" samples unconditionally")
    if config.guided and record.mode == "text-to-image" and record.caption_dropout == 0:
        log.warning("--cfg-scale %g on a generator trained with caption dropout 0: it never learnt the unconditional "
                    "(empty caption) distribution, so guidance mixes in an untrained branch; train with "
                    "--caption-dropout 0.1 for classifier-free guidance", config.cfg_scale)


def sample_images(config: SampleConfig) -> SampleResult:
    """Sample ``n`` images per prompt and write the output folder; see the module docstring."""
    started = time.perf_counter()
    record = read_record(config.model)
    check_request(config, record)
    damage = incomplete_reason(config.model)  # headers only: a truncated weights file is found before any work
    if damage is not None:
        raise TokalignError(f"{config.model}: {damage}; the generator folder is damaged, save it again (or pass "
                            "another --model)")
    from tokalign.generate.sample.decoding import image_decoder
    from tokalign.generate.sample.loading import hidden_size, load_generator, resolve_device, sampling_dtype

    per_prompt, prompts = config.n, max(1, len(config.prompts))
    labels = output.fitted_labels(config.prompts, prompts * per_prompt, per_prompt)
    device = resolve_device(config.device)
    corpus = config.corpus if config.corpus is not None else (Path(record.corpus) if record.corpus else None)
    output.check_out(config.out, config.model, corpus)  # before any load or sampling
    decoder = image_decoder(record, config.corpus, config.image_tokenizer_path, device)
    if not decoder.decodes:
        log.warning("%s; writing the sampled tokens only (%s), decode them later with tokalign decode --tokens",
                    decoder.notice, config.out / output.TOKENS_FILE)
    dtype = sampling_dtype(config.dtype, device, hidden_size(config.model))
    loaded = load_generator(config.model, device, dtype)
    load_seconds = time.perf_counter() - started
    prefixes, unconditional = _prefixes(config, loaded)
    from tokalign.align.formats.lock import writing_folder

    inputs = (corpus,) if corpus is not None else ()
    with writing_folder(config.out, output.KIND, what="generator sample", inputs=inputs, keep=(config.model,)):
        sampled = _sample_all(config, loaded, prefixes, unconditional)
        images = _write(config, record, decoder, labels, sampled, dtype)
    result = SampleResult(config.out, len(sampled.tokens), config.out / output.GRID if images else None,
                          sampled.seconds, time.perf_counter() - started, load_seconds, sampled.capture_seconds,
                          sampled.path, images)
    log.debug("sampled %d images in %.2f s (%.2f images/s)", result.images, sampled.seconds, result.images_per_second)
    return result


@dataclass(frozen=True)
class _Sampled:
    tokens: np.ndarray
    prompt_index: np.ndarray
    sample_index: np.ndarray
    seeds: list[int]
    seconds: float
    capture_seconds: float
    path: str


def _prefixes(config: SampleConfig, loaded):
    """Every prompt's prefix (tokenized before any sampling) and the unconditional one (None: image-only)."""
    from tokalign.generate.sample import prefix as px

    record, layout = loaded.record, loaded.record.layout
    if record.mode == "image-only":
        return [px.image_only_prefix(layout)], None
    prefixes = [px.text_prefix(px.caption_ids(loaded.tokenizer, p, layout, record.max_caption_tokens), layout)
                for p in config.prompts]
    return prefixes, px.unconditional_prefix(layout)


def _sample_all(config: SampleConfig, loaded, prefixes, unconditional) -> _Sampled:
    import torch

    from tokalign.align.training.progress import progress_bar
    from tokalign.generate.sample.fast_sampler import batch_sampler
    from tokalign.generate.sample.sampler import Settings
    from tokalign.generate.sample.seeds import sample_seed, uniforms

    layout, steps = loaded.record.layout, loaded.record.tokens_per_image
    jobs = [(p, s) for p in range(len(prefixes)) for s in range(config.n)]
    seeds = [sample_seed(config.seed, p, s) for p, s in jobs]
    settings = Settings(config.temperature, config.top_k, config.top_p, config.cfg_scale)
    sample, path = batch_sampler(loaded.model, layout, settings)
    width = max(len(p) for p in prefixes + ([unconditional] if unconditional else []))  # one shape for every batch
    chunks, bar = [], progress_bar(config.progress, desc="sample", unit="img", total=len(jobs))
    sync = torch.cuda.synchronize if next(loaded.model.parameters()).is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    for first in range(0, len(jobs), config.batch_size):
        batch = jobs[first:first + config.batch_size]
        ids = sample([prefixes[p] for p, _ in batch], steps=steps, uniforms=uniforms(seeds[first:first + len(batch)],
                     steps), unconditional=unconditional, width=width)
        chunks.append((ids - layout.image_offset).cpu())
        bar.update(len(batch))
    sync()
    seconds = time.perf_counter() - start
    bar.close()
    return _Sampled(torch.cat(chunks).numpy(), np.array([p for p, _ in jobs]), np.array([s for _, s in jobs]), seeds,
                    seconds, getattr(sample, "capture_seconds", 0.0), path)


def _write(config: SampleConfig, record: GeneratorRecord, decoder, labels, sampled: _Sampled, dtype: str) -> int:
    """Tokens first, then the PNGs and the grid, then samples.json; returns the number of PNGs written."""
    out = config.out
    earlier = output.begin(out)
    output.write_tokens(out, sampled.tokens, sampled.prompt_index, sampled.sample_index)
    written, images = {output.TOKENS_FILE}, []
    if decoder.decodes:
        images = output.write_images(out, decoder.tokenizer, sampled.tokens)
        output.grid_image(images, sampled.prompt_index, labels).save(out / output.GRID)
        written |= {output.GRID} | {output.image_file(i) for i in range(len(images))}
    output.remove_stale(out, earlier, written)
    files = [output.image_file(i) if images else None for i in range(len(sampled.tokens))]
    output.write_marker(out, {
        "model": str(config.model.resolve()), "mode": record.mode, "grid": list(record.grid),
        "image_tokenizer": record.image_tokenizer,
        "corpus": str(Path(decoder.corpus).resolve()) if decoder.corpus is not None else None,
        "decoded": decoder.decodes, "notice": decoder.notice, "prompts": list(config.prompts),
        "settings": {**config.settings(), "dtype": dtype, "path": sampled.path},
        "images": [{"file": f, "prompt_index": int(p), "sample_index": int(s), "seed": int(seed)}
                   for f, p, s, seed in zip(files, sampled.prompt_index, sampled.sample_index, sampled.seeds)],
        "sampling_seconds": round(sampled.seconds, 4),
        "images_per_second": round(len(sampled.tokens) / sampled.seconds, 4) if sampled.seconds > 0 else None})
    return len(images)
