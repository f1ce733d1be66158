"""``sample_images(config)``: the one library entry point of ``tokalign generator sample``.

Checks everything a user can get wrong before loading the model (folder, prompts vs mode, output folder, the
corpus's image tokenizer), samples in batches of ``batch_size`` images, then writes the output folder
(:mod:`.output`) with the PNGs decoded by the same code as ``tokalign decode``. Image ``(p, s)`` (prompt p,
sample s) is drawn from its own seed, so it is the same whatever the batch size or the other prompts.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokalign.align.errors import TokalignError
from tokalign.generate.model_folder import GeneratorRecord, read_record
from tokalign.generate.sample import output
from tokalign.generate.sample.config import SampleConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleResult:
    out: Path
    images: int
    grid: Path
    sampling_seconds: float  # token sampling only (model forwards and draws)
    total_seconds: float

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
    from tokalign.generate.sample.loading import corpus_for_decoding, load_generator, resolve_device

    corpus = corpus_for_decoding(record, config.corpus)
    output.check_out(config.out, config.model, corpus)  # before any model load or sampling
    loaded = load_generator(config.model, config.device, config.dtype)
    tokens, prompt_index, sample_index, seeds, seconds = _sample_all(config, loaded)
    result = _write(config, record, corpus, resolve_device(config.device), tokens, prompt_index, sample_index, seeds,
                    seconds, started)
    log.debug("sampled %d images in %.2f s (%.2f images/s)", result.images, seconds, result.images_per_second)
    return result


def _sample_all(config: SampleConfig, loaded):
    import torch

    from tokalign.align.training.progress import progress_bar
    from tokalign.generate.sample import prefix as px
    from tokalign.generate.sample.sampler import Settings, sample_image_ids
    from tokalign.generate.sample.seeds import sample_seed, uniforms

    record, layout = loaded.record, loaded.record.layout
    if record.mode == "image-only":
        prefixes, unconditional = [px.image_only_prefix(layout)], None
    else:
        prefixes = [px.text_prefix(px.caption_ids(loaded.tokenizer, p, layout, record.max_caption_tokens), layout)
                    for p in config.prompts]
        unconditional = px.unconditional_prefix(layout)
    jobs = [(p, s) for p in range(len(prefixes)) for s in range(config.n)]
    seeds = [sample_seed(config.seed, p, s) for p, s in jobs]
    settings = Settings(config.temperature, config.top_k, config.top_p, config.cfg_scale)
    steps = record.tokens_per_image
    chunks, bar = [], progress_bar(config.progress, desc="sample", unit="img", total=len(jobs))
    sync = torch.cuda.synchronize if next(loaded.model.parameters()).is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    for first in range(0, len(jobs), config.batch_size):
        batch = jobs[first:first + config.batch_size]
        ids = sample_image_ids(loaded.model, [prefixes[p] for p, _ in batch], layout=layout, steps=steps,
                               uniforms=uniforms(seeds[first:first + len(batch)], steps), settings=settings,
                               unconditional=unconditional)
        chunks.append((ids - layout.image_offset).cpu())
        bar.update(len(batch))
    sync()
    seconds = time.perf_counter() - start
    bar.close()
    tokens = torch.cat(chunks).numpy()
    return (tokens, np.array([p for p, _ in jobs]), np.array([s for _, s in jobs]), seeds, seconds)


def _write(config, record, corpus, device, tokens, prompt_index, sample_index, seeds, seconds, started) -> SampleResult:
    from PIL import Image

    from tokalign.align.formats.atomic import atomic_dir
    from tokalign.align.tokenize.decode import DecodeConfig, decode_tokens

    with atomic_dir(config.out) as tmp:
        tokens_path = output.write_tokens(tmp, tokens, prompt_index, sample_index)
        paths = decode_tokens(DecodeConfig(out=tmp / output.IMAGES, corpus=corpus, tokens_file=tokens_path,
                                           image_tokenizer_path=config.image_tokenizer_path, device=device))
        images = [np.asarray(Image.open(path).convert("RGB")) for path in paths]
        output.grid_image(images, prompt_index, config.prompts).save(tmp / output.GRID)
        output.write_marker(tmp, {
            "model": str(config.model.resolve()), "mode": record.mode, "grid": list(record.grid),
            "image_tokenizer": record.image_tokenizer, "corpus": str(Path(corpus).resolve()),
            "prompts": list(config.prompts), "settings": config.settings(),
            "images": [{"file": f"{output.IMAGES}/{path.name}", "prompt_index": int(p), "sample_index": int(s),
                        "seed": int(seed)} for path, p, s, seed in zip(paths, prompt_index, sample_index, seeds)],
            "sampling_seconds": round(seconds, 4),
            "images_per_second": round(len(tokens) / seconds, 4) if seconds > 0 else None})
    return SampleResult(config.out, len(tokens), config.out / output.GRID, seconds, time.perf_counter() - started)
