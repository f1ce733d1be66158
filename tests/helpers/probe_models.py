"""Tiny models for the generator-probe tests: an LM trained on a short text, generators made from it by the
trainer's own init and save code, a captioned tiny corpus, shuffled copies. Nothing is downloaded."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import torch

#: test data (not the probe's packaged text): short and repetitive, so a tiny LM learns it in a few seconds
TEXT = ("the cat sat on the mat . the dog sat on the log . a red ball lies under the old tree . "
        "the cat saw the dog and the dog saw the cat . a blue box stands near the small house . ") * 3
CAPTIONS = ("a red circle", "a blue square", "a green triangle on the left", "a small red square",
            "a big blue circle", "a green square on the right")
CODEBOOK = 48  # 4x4 grid of 64-pixel patches: 16 tokens per 256x256 image


def text_words() -> list[str]:
    words = re.findall(r"\w+|[^\w\s]+", TEXT + " " + " ".join(CAPTIONS))
    return list(dict.fromkeys(words))


def train_lm(folder: Path, steps: int = 60) -> None:
    """Fit the tiny LM in ``folder`` to ``TEXT`` (a few seconds), in place."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ids = torch.tensor([tokenizer(TEXT, add_special_tokens=False)["input_ids"]])
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-2)
    model.train()
    for _ in range(steps):
        loss = model(ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(folder, safe_serialization=True)


def make_corpus(folder: Path, seed: int = 0) -> Path:
    """Captioned tiny corpus: a random 48-code k-means tokenizer of 64-pixel patches, one item per caption."""
    from tokalign.align.formats.corpus import CorpusWriter
    from tokalign.align.image_tokenizers.kmeans import PatchKMeansTokenizer
    from tokalign.align.image_tokenizers.registry import KMEANS_FILE

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    codebook = rng.uniform(0, 255, (CODEBOOK, 64 * 64 * 3)).astype(np.float32)
    tokenizer = PatchKMeansTokenizer(codebook, patch=64, image_size=256)
    tokenizer.save(folder / KMEANS_FILE)
    writer = CorpusWriter(folder, image_tokenizer=dict(tokenizer.identity(), file=KMEANS_FILE),
                          text_tokenizer={"name": "tiny"}, tokens_per_image=tokenizer.tokens_per_image)
    for i, caption in enumerate(CAPTIONS):
        writer.add(rng.integers(0, CODEBOOK, tokenizer.tokens_per_image).astype(np.uint16), [4, 5], caption, f"{i:04d}")
    return writer.finish()


def write_export(path: Path, base, identity: dict, seed: int) -> Path:
    """A generator-init file for ``base`` (a BaseLM): random image and structure rows at the LM's row scale."""
    from tokalign.align.formats.generator_init import SPECIAL_TOKENS, VocabLayout, write_generator_init

    layout = VocabLayout(base.text_rows, int(identity["codebook_size"]))
    generator = torch.Generator().manual_seed(seed)
    scale = float(base.model.get_input_embeddings().weight.detach().std())
    image = torch.randn(layout.codebook_size, base.d_model, generator=generator) * scale
    special = torch.randn(len(SPECIAL_TOKENS), base.d_model, generator=generator) * scale
    meta = {"lm": base.identity, "lm_spec": base.spec, "lm_embedding_sha256": base.embedding_sha256,
            "d_model": base.d_model, "image_tokenizer": identity, "source_run": "tests", "source_table_sha256": "0" * 64,
            "source_steps": 0, "rescale": {"method": "none"}, "special_init": {"seed": seed}}
    write_generator_init(path, image, special, layout, meta)
    return path


def make_generator(folder: Path, base_folder: Path, corpus: Path, export: Path | None = None, *,
                   mode: str = "aligned", seed: int = 0) -> Path:
    """A generator folder made by the trainer's own code (init mode + save) from ``base_folder``, 0 steps."""
    import json

    from tokalign.align.formats.generator_init import VocabLayout
    from tokalign.generate.model.base import load_base_lm
    from tokalign.generate.model.init_modes import InitRequest, initialize
    from tokalign.generate.model_folder import GeneratorRecord
    from tokalign.generate.train.save import save_model_folder

    identity = json.loads((corpus / "manifest.json").read_text())["image_tokenizer"]
    base = load_base_lm(str(base_folder))
    layout = VocabLayout(base.text_rows, int(identity["codebook_size"]))
    if mode == "aligned" and export is None:
        export = write_export(folder.parent / f"{folder.name}-init.safetensors", base, identity, seed)
    tokenizer = base.tokenizer
    result = initialize(base, mode, InitRequest(layout, seed=seed, init_from=export, image_tokenizer=identity))
    record = GeneratorRecord(layout=layout, mode="text-to-image", grid=tuple(identity["grid"]),
                             image_tokenizer=identity, caption_dropout=0.1, seq_len=64, max_caption_tokens=16,
                             corpus=str(corpus.resolve()), base_lm=result.provenance["base_lm"],
                             init=result.provenance)
    return save_model_folder(folder, result.model, tokenizer, layout, record)


def shuffled_copy(source: Path, folder: Path, seed: int = 0) -> Path:
    """The same generator folder with every weight tensor's entries randomly permuted."""
    from transformers import AutoModelForCausalLM

    shutil.copytree(source, folder)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            flat = param.view(-1)
            flat.copy_(flat[torch.randperm(flat.numel(), generator=generator)])
    model.save_pretrained(folder, safe_serialization=True)
    return folder
