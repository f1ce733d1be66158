"""A tiny tokalign generator folder on disk (random weights), and a tiny k-means corpus to decode its samples.

``make_tiny_corpus(folder)`` writes a corpus with no items whose k-means tokenizer has ``codebook_size`` codes
of 64x64-pixel patches: 256x256 images of a 4x4 grid, 16 tokens each. ``make_tiny_generator(folder, corpus)``
saves a 2-layer ``LlamaForCausalLM`` (d_model 32, untied head) whose vocabulary is the tokalign layout over the tiny LM's
word vocabulary, its tokenizer with the image and structure tokens added at the layout's ids, and the ``tokalign_generator.json`` record.
Random weights: only the sampler's mask keeps its images valid. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from tiny_lm import _tokenizer, _vocab

WORDS = ("a", "red", "blue", "green", "circle", "square", "triangle", "on", "the", "left", "right", "big", "small")


def make_tiny_corpus(folder: Path, codebook_size: int = 48, patch: int = 64, seed: int = 0) -> Path:
    """A corpus folder (manifest + k-means file, no items) whose tokenizer decodes to 256x256 images."""
    from tokalign.align.formats.corpus import write_manifest
    from tokalign.align.image_tokenizers.kmeans import PatchKMeansTokenizer
    from tokalign.align.image_tokenizers.registry import KMEANS_FILE

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    colours = np.random.default_rng(seed).uniform(0, 255, (codebook_size, 1, 3)).astype(np.float32)
    codebook = np.repeat(colours, patch * patch, axis=1).reshape(codebook_size, -1)  # one solid colour per code
    tokenizer = PatchKMeansTokenizer(codebook, patch=patch, image_size=256)
    tokenizer.save(folder / KMEANS_FILE)
    identity = dict(tokenizer.identity(), file=KMEANS_FILE)
    write_manifest(folder, shards=[], tokens_per_image=tokenizer.tokens_per_image, image_tokenizer=identity,
                   text_tokenizer={"name": "tiny"})
    return folder


def make_tiny_generator(folder: Path, corpus: Path | None = None, *, mode: str = "text-to-image",
                        caption_dropout: float = 0.1, words: Sequence[str] = WORDS, d_model: int = 32,
                        layers: int = 2, codebook_size: int | None = None, grid: tuple[int, int] | None = None,
                        seed: int = 0) -> Path:
    """Save a tiny generator in ``folder`` (see the module docstring); returns ``folder``.

    With ``corpus`` the record names it and its tokenizer (codebook size and grid follow from it); without one,
    ``codebook_size`` (default 48) and ``grid`` (default 4x4) are used and the record names a made-up tokenizer.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from tokalign.align.formats.generator_init import SPECIAL_TOKENS, VocabLayout
    from tokalign.generate.model_folder import GeneratorRecord, write_record

    identity = {"kind": "kmeans", "codebook_size": codebook_size or 48, "grid": list(grid or (4, 4)), "sha256": "0" * 64}
    if corpus is not None:
        import json

        identity = json.loads((Path(corpus) / "manifest.json").read_text())["image_tokenizer"]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _vocab(words)
    layout = VocabLayout(len(vocab), int(identity["codebook_size"]))
    config = LlamaConfig(vocab_size=layout.total_rows, hidden_size=d_model, intermediate_size=2 * d_model,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=4096, tie_word_embeddings=False, pad_token_id=layout.pad_id,
                         bos_token_id=layout.special("<doc>"), eos_token_id=layout.special("</doc>"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
        with torch.no_grad():  # rows larger than the default init: varied, prompt-dependent distributions
            model.get_input_embeddings().weight.normal_(0, 0.5)
            model.get_output_embeddings().weight.normal_(0, 0.3)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer = _tokenizer(vocab)
    images = [f"<image_{t}>" for t in range(layout.codebook_size)]  # the trainer's rule: tokens at the layout's ids
    tokenizer.add_tokens(images + list(SPECIAL_TOKENS), special_tokens=True)
    assert tokenizer.convert_tokens_to_ids("<pad>") == layout.pad_id
    tokenizer.save_pretrained(folder)
    record = GeneratorRecord(layout=layout, mode=mode, grid=tuple(identity["grid"]), image_tokenizer=identity,
                             caption_dropout=caption_dropout, seq_len=64, max_caption_tokens=16,
                             corpus=str(Path(corpus).resolve()) if corpus is not None else "")
    write_record(folder, record)
    return folder
