"""Image quality: sample held-out captions with ``tokalign generator sample``'s code, score them with CLIP.

Held-out captions are the first ``n`` of the generator run's held-out split (``run.json`` beside the model
folder: ``config.data.holdout`` and ``config.run.seed``, the split the trainer made with
:func:`tokalign.generate.sequences.dataset.split`). Without a run record the last ``n`` corpus items are used
and the output says they are not known to be held out. One image per caption, seeded (``seed``), written as PNGs under ``OUT/samples/`` in
the sampler's output layout, so FID can be computed on them later (see the README).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from tokalign.align.errors import TokalignError
from tokalign.generate.model_folder import GeneratorRecord

log = logging.getLogger(__name__)
SAMPLES = "samples"


def held_out_captions(model: Path, record: GeneratorRecord, n: int) -> tuple[list[str], dict[str, Any]]:
    """``n`` captions and where they came from (see the module docstring)."""
    from tokalign.align.formats.corpus import open_corpus
    from tokalign.generate.sample.loading import corpus_for_decoding

    corpus = open_corpus(corpus_for_decoding(record))
    split = _run_split(Path(model).resolve().parent)
    if split is not None:
        from tokalign.generate.sequences.dataset import split as holdout_split  # the trainer's split

        holdout, seed = split
        indices = holdout_split(len(corpus), holdout, seed)[1][:n]
        how = {"held_out": True, "split": f"run.json holdout {holdout}, seed {seed}"}
    else:
        indices = np.arange(max(0, len(corpus) - n), len(corpus))
        how = {"held_out": False, "split": "no run.json beside the model: the corpus's last items (may be trained on)"}
    if len(indices) == 0:
        raise TokalignError("the generator's corpus holds no captions to sample for the CLIP score")
    return corpus.captions(indices), {**how, "indices": [int(i) for i in indices]}


def _run_split(run: Path) -> tuple[int, int] | None:
    from tokalign.generate.train.run_folder import read_record

    try:
        config = (read_record(run) or {})["config"]
        return int(config["data"]["holdout"]), int(config["run"]["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def clip_probe(model: Path, record: GeneratorRecord, clip_folder: Path, out: Path, *, n: int, seed: int,
               cfg_scale: float, device: str, progress: bool) -> dict[str, Any]:
    """Sample ``n`` held-out captions, score them with the CLIP model of ``clip_folder``."""
    from PIL import Image

    from tokalign.generate.probe.clip_score import load_clip
    from tokalign.generate.sample.decoding import image_decoder
    from tokalign.generate.sample.config import SampleConfig
    from tokalign.generate.sample.run import sample_images

    if record.mode != "text-to-image":
        raise TokalignError(f"--clip-model scores captions, but {model} is an image-only generator; drop --clip-model")
    decoder = image_decoder(record)
    if not decoder.decodes:  # checked before any sampling: a CLIP score needs images
        raise TokalignError(f"--clip-model scores images, but this generator's samples cannot be decoded "
                            f"({decoder.notice}); drop --clip-model or restore the generator's corpus")
    scorer = load_clip(clip_folder, "cuda" if device == "cuda" else "cpu")
    captions, where = held_out_captions(model, record, n)
    result = sample_images(SampleConfig(model=model, out=out / SAMPLES, prompts=tuple(captions), n=1, seed=seed,
                                        cfg_scale=cfg_scale, device=device, progress=progress))
    from tokalign.generate.sample.output import read_samples

    marker = read_samples(result.out)
    images = [Image.open(result.out / item["file"]) for item in marker["images"]]
    paired = [captions[item["prompt_index"]] for item in marker["images"]]
    scores = scorer.score(images, paired)
    return {"clip_model": scorer.identity, "captions": where, "cfg_scale": cfg_scale, "seed": seed,
            "samples": str(result.out), "clip_score": scores["clip_score"], "pairs": scores["pairs"],
            "per_caption": [{"caption": c, "clip_score": s} for c, s in zip(paired, scores["per_pair"])]}
