"""``run_probe(config)``: the one library entry point of ``tokalign generator probe``.

Order: everything a user can get wrong is checked before the slow loads (the folder's record, the held-out
text, the base spec, the init rows' source); then the generator and the base LM are loaded, the language probes
run on both (the same token ids), the image rows are compared with their init, optional CLIP samples are drawn,
and ``probe.json`` + ``probe.md`` are written atomically into ``config.out_dir`` (nothing else there is touched,
except ``samples/``, the CLIP samples, which the sampler replaces).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokalign.align.errors import TokalignError
from tokalign.generate.model_folder import GeneratorRecord, read_record
from tokalign.generate.probe.config import ProbeConfig

log = logging.getLogger(__name__)
FORMAT = "tokalign-probe"
VERSION = 1
JSON_FILE = "probe.json"
MARKDOWN_FILE = "probe.md"


@dataclass(frozen=True)
class ProbeResult:
    out: Path
    report: dict[str, Any]

    @property
    def json_path(self) -> Path:
        return self.out / JSON_FILE

    @property
    def markdown_path(self) -> Path:
        return self.out / MARKDOWN_FILE


def run_probe(config: ProbeConfig) -> ProbeResult:
    """Probe ``config.model`` against its base LM and write the report (module docstring)."""
    started = time.perf_counter()
    record = read_record(config.model)
    text = _held_out(config)
    spec = _base_spec(config, record)
    _check_out(config.out_dir, config.model, clip=config.clip_model is not None)
    from tokalign.generate.probe.init_rows import check_source

    check_source(record, config.init_from)
    import torch

    from tokalign.generate.probe.prompts import load_prompts
    from tokalign.generate.sample.loading import load_generator, resolve_device

    device = resolve_device(config.device)
    seconds: dict[str, float] = {}
    tick = time.perf_counter()
    with _no_hf_bars():
        generator = load_generator(config.model, device, "float32")
    ids = _text_ids(generator.tokenizer, text.text, record, config.max_text_tokens)
    prompts = load_prompts()
    seconds["load_generator"] = time.perf_counter() - tick
    base_info, base_language, base_text = _base_side(config, record, spec, generator, ids, prompts, device, seconds)
    tick = time.perf_counter()
    language = {"base": base_language,
                "generator": _language(generator.model, generator.tokenizer, ids, prompts, config, record.layout)}
    seconds["language_generator"] = time.perf_counter() - tick
    tick = time.perf_counter()
    image_rows = _image_rows(config, record, generator.model, base_text, base_info["embedding_sha256"])
    seconds["image_rows"] = time.perf_counter() - tick
    del base_text
    gc.collect()
    quality: dict[str, Any] | None = None
    if config.clip_model is not None:
        from tokalign.generate.probe.clip_samples import clip_probe

        del generator
        gc.collect()
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
        tick = time.perf_counter()
        quality = clip_probe(config.model, record, config.clip_model, config.out_dir, n=config.clip_samples,
                             seed=config.seed, cfg_scale=config.cfg_scale, device=device, progress=config.progress)
        seconds["clip"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - started
    report = {"format": FORMAT, "version": VERSION, "model": str(config.model.resolve()),
              "generator": {"mode": record.mode, "grid": list(record.grid), "steps": record.steps,
                            "init": record.init.get("mode"), "layout": record.layout.to_json()},
              "base": base_info,
              "device": device, "settings": config.to_json(),
              "text": {"source": text.source, "tokens": len(ids), "window": config.window},
              "language": language, "image_rows": image_rows, "image_quality": quality,
              "seconds": {k: round(v, 2) for k, v in seconds.items()}}
    return _write(config.out_dir, report)


@contextlib.contextmanager
def _no_hf_bars():
    """Library code does not print: transformers' loading bars off while the models load."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def _base_side(config: ProbeConfig, record: GeneratorRecord, spec: str, generator, ids, prompts, device: str,
               seconds: dict[str, float]):
    """(base identity, base language figures, base input rows): from the cache, else by loading the base LM."""
    import numpy as np

    from tokalign.align.lm.load import default_cache_root, load_frozen_lm, resolve_lm_spec
    from tokalign.generate.probe import base_cache

    layers = int(generator.model.config.num_hidden_layers)
    settings = {"window": config.window, "max_new_tokens": config.max_new_tokens, "device": device}
    root = config.cache_root if config.cache_root is not None else default_cache_root()
    path = base_cache.cache_path(root, resolve_lm_spec(spec).identity, layers, ids, prompts, settings)
    tick = time.perf_counter()
    cached = base_cache.read(path)
    if cached is not None:
        frozen = load_frozen_lm(spec, root)
        if frozen.embedding_sha256 == cached["base"]["embedding_sha256"]:
            seconds["load_base"] = time.perf_counter() - tick
            return {**cached["base"], "cached": str(path)}, cached["language"], np.ascontiguousarray(frozen.embeddings.numpy())
    with _no_hf_bars():
        base, lm_layers = _load_base(spec, layers)
    if base.text_rows != record.layout.text_rows:
        raise TokalignError(f"--base {spec!r} has {base.text_rows} text rows, the generator's text vocabulary "
                            f"{record.layout.text_rows}; pass the LM the generator started from")
    base.model.to(device)
    seconds["load_base"] = time.perf_counter() - tick
    tick = time.perf_counter()
    language = _language(base.model, generator.tokenizer, ids, prompts, config, None)
    seconds["language_base"] = time.perf_counter() - tick
    info = {"spec": spec, "source": base.source, "identity": base.identity, "embedding_sha256": base.embedding_sha256,
            "text_rows": base.text_rows, "layers": int(base.model.config.num_hidden_layers), "lm_layers": lm_layers}
    base_cache.write(path, info, language)
    return info, language, base.model.get_input_embeddings().weight.detach().float().cpu().numpy()


def _load_base(spec: str, layers: int):
    """(base LM, the LM's decoder layers): the base cut to the generator's decoder layers when the generator kept fewer (``--num-layers``)."""
    import dataclasses

    from tokalign.generate.model.base import load_base_lm, plain_copy

    base = load_base_lm(spec)
    have = int(base.model.config.num_hidden_layers)
    if layers > have:
        raise TokalignError(f"the generator has {layers} decoder layers, more than --base {spec!r} ({have}); pass the "
                            "LM the generator started from")
    if layers < have:
        log.info("base LM cut to the generator's first %d of %d decoder layers, as its init was", layers, have)
        base = dataclasses.replace(base, model=plain_copy(base.model, layers).eval())
    return base, have


def _held_out(config: ProbeConfig):
    from tokalign.generate.probe.heldout_text import file_text, packaged_text

    return file_text(config.text_file) if config.text_file is not None else packaged_text()


def _base_spec(config: ProbeConfig, record: GeneratorRecord) -> str:
    from tokalign.generate.probe.init_rows import recorded_base

    spec = config.base or recorded_base(record)[0]
    if not spec:
        raise TokalignError(f"{config.model}'s record names no base LM; pass --base LM (what `fit --lm` takes)")
    from tokalign.align.lm.load import resolve_lm_spec

    resolve_lm_spec(spec)  # a one-line error for a spec that points nowhere, before any load
    return str(spec)


PROBE_KIND = "generator-probe"


def _check_out(out: Path, model: Path, *, clip: bool) -> None:
    """The shared output rule, before any slow work: a new, empty or earlier probe folder (and, for the CLIP
    score, samples folder), never the model folder itself."""
    from tokalign.align.formats.outputs import claim_output_dir
    from tokalign.generate.probe.clip_samples import SAMPLES
    from tokalign.generate.sample.output import KIND as SAMPLES_KIND

    claim_output_dir(out, PROBE_KIND, keep=(Path(model),))
    if clip:
        claim_output_dir(out / SAMPLES, SAMPLES_KIND, keep=(Path(model),))


def _text_ids(tokenizer, text: str, record: GeneratorRecord, limit: int) -> list[int]:
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])[:limit]
    if len(ids) < 2:
        raise TokalignError("the held-out text is shorter than two tokens; pass a longer --text-file")
    if max(ids) >= record.layout.text_rows:
        raise TokalignError("the held-out text encodes to ids outside the text vocabulary (it contains structure or "
                            "image token strings); pass plain text")
    return ids


def _language(model, tokenizer, ids, prompts, config: ProbeConfig, layout) -> dict[str, Any]:
    from tokalign.generate.probe.language import IdRenderer, greedy, perplexity
    from tokalign.generate.probe.prompts import translation_hit

    render = IdRenderer(tokenizer, layout)
    encode = lambda text: list(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    completions = [{"prompt": p, "completion": render(greedy(model, encode(p), config.max_new_tokens))}
                   for p in prompts.knowledge]
    newline = lambda out: "\n" in render(out)  # noqa: E731
    translations = []
    for item in prompts.translations:
        completion = render(greedy(model, encode(item.prompt), 8, stop=newline))
        translations.append({"word": item.word, "expected": item.expected, "completion": completion,
                             "hit": translation_hit(completion, item.expected)})
    hits = sum(t["hit"] for t in translations)
    return {"perplexity": perplexity(model, ids, config.window, layout), "completions": completions,
            "translation": {"exact_match": hits / len(translations), "hits": hits, "items": translations}}


def _image_rows(config: ProbeConfig, record: GeneratorRecord, model, base_text, base_sha) -> dict[str, Any]:
    from tokalign.generate.probe.init_rows import init_rows
    from tokalign.generate.probe.row_retention import probe_rows, row_retention

    init = init_rows(record, base_text, base_sha, config.init_from)
    if isinstance(init, str):
        return {"skipped": init}
    layout = record.layout
    weight = model.get_input_embeddings().weight.detach().float().cpu().numpy()
    chosen = probe_rows(layout.codebook_size, config.image_rows)
    generator_rows = weight[layout.image_offset:layout.special_offset][chosen]
    summary = row_retention(generator_rows, weight[:layout.text_rows], init.image_rows[chosen], init.text_rows, config.k)
    return {"init": init.source, "of_codebook": layout.codebook_size, **summary}


def _write(out: Path, report: dict[str, Any]) -> ProbeResult:
    from tokalign.align.formats import atomic
    from tokalign.generate.probe.report_md import markdown

    from tokalign.align.formats.outputs import write_marker

    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, PROBE_KIND)
    atomic.write_json(out / JSON_FILE, report)
    atomic.write_text(out / MARKDOWN_FILE, markdown(report))
    log.info("wrote %s and %s", out / JSON_FILE, out / MARKDOWN_FILE)
    return ProbeResult(out, report)
