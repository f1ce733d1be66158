"""Inputs of the GPU check, made on the machine itself (nothing large travels): see ``benchmarks/gpu_checks.sh``.

``lm``      a random-weight SmolLM2-shaped Hugging Face LLaMA folder: the carried configuration and tokenizer
            (``build_assets.py``) plus ``LlamaForCausalLM(config)`` weights, saved with ``save_pretrained``;
``corpus``  ``tokens.npy`` (N, grid*grid) uniform random image tokens, ``tokens.jsonl`` short captions, and
            ``codebook.safetensors``, a random k-means patch codebook (no faiss needed: decoding only pastes
            centroid patches), for ``tokalign tokenize --image-tokenizer pretokenized --image-tokenizer-path``;
``prompts`` a prompts file for ``generator sample``.

Uses only torch, transformers, numpy and safetensors (no faiss, gguf, diffusers, open_clip, webdataset).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

COLORS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black", "pink", "gray")
SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon")
SIZES = ("small", "medium", "large")
PLACES = ("in the center", "at the top left", "at the top right", "at the bottom left", "at the bottom right",
          "on the left", "on the right", "at the top", "at the bottom")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "vocab.json", "merges.txt", "generation_config.json")


def caption(rng: np.random.Generator) -> str:
    pick = lambda seq: seq[int(rng.integers(len(seq)))]  # noqa: E731
    text = f"a {pick(SIZES)} {pick(COLORS)} {pick(SHAPES)} {pick(PLACES)}"
    if rng.random() < 0.5:
        text += f" on a {pick(COLORS)} background"
    return text


def make_lm(assets: Path, out: Path, layers: int | None, seed: int) -> None:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    config = LlamaConfig.from_pretrained(str(assets))
    if layers:
        config.num_hidden_layers = layers
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    for name in TOKENIZER_FILES:
        if (assets / name).is_file() and not (out / name).exists():
            shutil.copy2(assets / name, out / name)
    try:  # a tokenizer_config written by a newer transformers may name a class this one lacks
        tokenizer = AutoTokenizer.from_pretrained(str(out))
    except Exception as exc:
        print(f"tokenizer did not load as saved ({type(exc).__name__}: {exc}); retrying as PreTrainedTokenizerFast")
        path = out / "tokenizer_config.json"
        record = json.loads(path.read_text(encoding="utf-8"))
        record["tokenizer_class"] = "PreTrainedTokenizerFast"
        path.write_text(json.dumps(record, indent=2), encoding="utf-8")
        tokenizer = AutoTokenizer.from_pretrained(str(out))
    params = sum(p.numel() for p in model.parameters())
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"random-weight LM {out}: {config.num_hidden_layers} layers, d {config.hidden_size}, vocab "
          f"{config.vocab_size}, {params / 1e6:.1f}M params, tokenizer {len(tokenizer)} tokens, {size / 1e6:.0f} MB, "
          f"{time.perf_counter() - start:.1f} s")


def make_corpus_inputs(out: Path, items: int, grid: int, codebook: int, seed: int) -> None:
    from tokalign.align.image_tokenizers.kmeans import PatchKMeansTokenizer

    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "tokens.npy", rng.integers(0, codebook, size=(items, grid * grid), dtype=np.uint16))
    with open(out / "tokens.jsonl", "w", encoding="utf-8") as handle:
        for i in range(items):
            handle.write(json.dumps({"key": f"{i:08d}", "caption": caption(rng)}) + "\n")
    # Each code a flat colour patch (8x8 RGB): uniform random tokens decode to a coloured mosaic.
    colours = rng.integers(0, 256, size=(codebook, 1, 3)).astype(np.float32)
    PatchKMeansTokenizer(np.repeat(colours, 64, axis=1).reshape(codebook, 192), patch=8,
                         image_size=8 * grid).save(out / "codebook.safetensors")
    print(f"corpus inputs {out}: {items} items x {grid * grid} tokens (codebook {codebook}), captions, "
          f"a k-means codebook file; {time.perf_counter() - start:.1f} s")


def make_prompts(out: Path, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    out.write_text("".join(caption(rng) + "\n" for _ in range(count)), encoding="utf-8")
    print(f"{count} prompts in {out}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    lm = sub.add_parser("lm")
    lm.add_argument("--assets", type=Path, required=True)
    lm.add_argument("--out", type=Path, required=True)
    lm.add_argument("--layers", type=int, default=None, help="decoder layers [default: the config's]")
    lm.add_argument("--seed", type=int, default=0)
    corpus = sub.add_parser("corpus")
    corpus.add_argument("--out", type=Path, required=True)
    corpus.add_argument("--items", type=int, default=20000)
    corpus.add_argument("--grid", type=int, default=32)
    corpus.add_argument("--codebook", type=int, default=16384)
    corpus.add_argument("--seed", type=int, default=0)
    prompts = sub.add_parser("prompts")
    prompts.add_argument("--out", type=Path, required=True)
    prompts.add_argument("--count", type=int, default=1)
    prompts.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if args.what == "lm":
        make_lm(args.assets, args.out, args.layers, args.seed)
    elif args.what == "corpus":
        make_corpus_inputs(args.out, args.items, args.grid, args.codebook, args.seed)
    else:
        make_prompts(args.out, args.count, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
