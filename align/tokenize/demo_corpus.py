"""The embedded default corpus: procedural shape scenes, tokenized offline.

Builds a corpus (see corpus.py) from ``shapes.py`` scenes: a patch k-means
image tokenizer is fitted on the first ``codebook_images`` scenes and saved in
the corpus folder, every 256x256 scene is encoded to a grid of
``(256 / patch)`` squared tokens (``patch`` 8: 32x32 = 1,024; 32: 8x8 = 64), and
every caption is tokenized with the chosen LM's tokenizer.  The folder appears only when
complete (it is built beside its final name and renamed).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tokalign.align.formats import outputs
from tokalign.align.formats.atomic import atomic_dir
from tokalign.align.formats.corpus import CorpusWriter
from tokalign.align.errors import TokalignError
from tokalign.align.training.progress import progress_bar
from tokalign.align.fit.config import DEFAULT_LM
from tokalign.align.fit.guards import check_seed
from tokalign.align.image_tokenizers.registry import KMEANS_FILE
from tokalign.align.training.settings import option_help as _help

log = logging.getLogger(__name__)
IMAGE_SIZE = 256  #: side of a rendered scene in pixels; ``patch`` must divide it


@dataclass(frozen=True)
class DemoCorpusConfig:
    out: Path = field(metadata=_help("Corpus folder to create."))
    items: int = field(default=12288, metadata=_help("Image-caption pairs to generate."))
    seed: int = field(default=0, metadata=_help("Seed of the scenes and the codebook."))
    codebook_size: int = field(default=16384, metadata=_help("Image tokenizer codebook size."))
    patch: int = field(default=8, metadata=_help(
        "Side of the square pixel patch one image token covers (8: a 32x32 grid; 32: 8x8)."))
    codebook_images: int = field(default=3072, metadata=_help("Scenes the k-means codebook is fitted on."))
    kmeans_iterations: int = 8
    lm: str = field(default=DEFAULT_LM, metadata=_help("LM whose tokenizer encodes the captions."))
    cache_root: Path | None = field(default=None, metadata=_help("Cache for derived LM weights."))
    shard_size: int = 4096
    chunk: int = 256
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.items < 2:
            raise TokalignError(f"--items {self.items} must be at least 2")
        if not 1 <= self.codebook_size <= 65536:
            raise TokalignError(f"--codebook-size {self.codebook_size} must lie in 1..65536 (tokens are uint16)")
        if not 1 <= self.patch <= IMAGE_SIZE or IMAGE_SIZE % self.patch:
            raise TokalignError(f"--patch {self.patch} must divide the scenes' {IMAGE_SIZE} pixels (e.g. 8, 16, 32)")
        check_seed(self.seed)
        if self.codebook_images < 1 or self.shard_size < 1 or self.chunk < 1:
            raise TokalignError("--codebook-images, shard size and chunk must be positive")


def settings_differ(config: DemoCorpusConfig, manifest: dict) -> list[str]:
    """The options (``--patch 8 (there) vs 32 (asked)``) in which an existing corpus's manifest differs from ``config``."""
    source, tokenizer = manifest.get("source") or {}, manifest.get("image_tokenizer") or {}
    there = {"--items": source.get("items", manifest.get("items")), "--seed": source.get("seed"),
             "--codebook-size": tokenizer.get("codebook_size"), "--patch": tokenizer.get("patch")}
    asked = {"--items": config.items, "--seed": config.seed, "--codebook-size": config.codebook_size,
             "--patch": config.patch}
    return [f"{k} {there[k]} (there) vs {asked[k]} (asked)" for k in asked if there[k] != asked[k]]


def _render(seed: int, indices: range) -> tuple[np.ndarray, list[str]]:
    from tokalign.align.sources.shapes import make_scene, render

    scenes = [make_scene(seed, i) for i in indices]
    return np.stack([render(s, IMAGE_SIZE)[0] for s in scenes]), [s.caption for s in scenes]


def build_demo_corpus(config: DemoCorpusConfig, overwrite: bool = False) -> Path:
    """Build the shapes corpus at ``config.out``; return its path.

    An existing corpus there is an error unless ``overwrite``; it is then
    replaced only once the new one is complete.
    """
    from tokalign.align.lm.captions import text_tokenizer_identity
    from tokalign.align.image_tokenizers.kmeans import PatchKMeansTokenizer
    from tokalign.align.lm.load import load_frozen_lm, tokenize_captions

    claim = outputs.claim_output_dir(config.out, outputs.CORPUS)
    if claim.state == "own" and not overwrite:
        raise TokalignError(f"{config.out} already holds a corpus; pass --force to rebuild it, or choose another --out")
    if claim.state == "own":
        outputs.check_no_foreign(config.out, outputs.CORPUS)  # the rebuild replaces the folder as a whole
    lm = load_frozen_lm(config.lm, config.cache_root)
    sample, _ = _render(config.seed, range(min(config.codebook_images, config.items)))
    log.info("fitting a %d-code k-means tokenizer on the %dx%d patches of %d scenes", config.codebook_size,
             config.patch, config.patch, len(sample))
    tokenizer = PatchKMeansTokenizer.fit(sample, codebook_size=config.codebook_size, patch=config.patch,
                                         iterations=config.kmeans_iterations, seed=config.seed)
    del sample
    with atomic_dir(config.out) as tmp:
        tokenizer.save(tmp / KMEANS_FILE)
        writer = CorpusWriter(tmp, image_tokenizer=dict(tokenizer.identity(), file=KMEANS_FILE),
                              text_tokenizer=text_tokenizer_identity(lm), tokens_per_image=tokenizer.tokens_per_image,
                              shard_size=config.shard_size,
                              source={"kind": "shapes", "seed": config.seed, "items": config.items})
        _encode_all(config, tokenizer, lm, tokenize_captions, writer)
        writer.finish()
    return config.out


def _encode_all(config: DemoCorpusConfig, tokenizer, lm, tokenize, writer: CorpusWriter) -> None:
    bar = progress_bar(config.progress, desc="demo corpus", unit="img", total=config.items)
    starts = range(0, config.items, config.chunk)
    with ThreadPoolExecutor(max_workers=1) as pool:  # render the next chunk while this one encodes
        pending = pool.submit(_render, config.seed, range(0, min(config.chunk, config.items)))
        for start in starts:
            images, captions = pending.result()
            nxt = start + config.chunk
            if nxt < config.items:
                pending = pool.submit(_render, config.seed, range(nxt, min(nxt + config.chunk, config.items)))
            tokens = tokenizer.encode(images)
            for j, (row, ids, caption) in enumerate(zip(tokens, tokenize(lm.tokenizer, captions), captions)):
                writer.add(row, ids, caption, key=f"shapes-{config.seed}-{start + j:08d}")
            bar.update(len(images))
    bar.close()
