"""A tiny LLaMA-shaped causal LM folder for the generator tests (CPU, offline, fast).

``make_tiny_llama(folder, tied=True)`` writes a ``LlamaForCausalLM`` (d_model 32, 2 layers, 4 heads / 2 KV
heads) and the word-level tokenizer of :mod:`tiny_lm` over the shapes caption words, so a corpus built with
the ``tiny_lm`` fixture's tokenizer matches it (same tokenizer fingerprint). Unlike :mod:`tiny_lm`, every weight
is moved away from the architecture's own init (norm weights are not all ones, matrices are not the init's
draws), so a test can tell "re-initialized" from "kept". ``tied=False`` gives a separate output head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from tiny_lm import BOS_ID, EOS_ID, PAD_ID, _tokenizer, _vocab

D_MODEL = 32
LAYERS = 2


def tiny_llama_model(vocab_size: int, *, tied: bool = True, d_model: int = D_MODEL, layers: int = LAYERS,
                     seed: int = 0):
    """An in-memory tiny ``LlamaForCausalLM`` whose weights are seeded, non-default draws."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=2 * d_model,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=tied, pad_token_id=PAD_ID,
                         bos_token_id=BOS_ID, eos_token_id=EOS_ID)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.ndim == 1:  # norms: around one, but not one
                param.copy_(1.0 + 0.1 * noise)
            elif "embed_tokens" in name or "lm_head" in name:
                param.copy_(0.5 * noise)
            else:
                param.copy_(noise / param.shape[-1] ** 0.5)
    return model


def make_tiny_llama(folder: Path, words: Sequence[str] | None = None, *, tied: bool = True, seed: int = 0,
                    layers: int = LAYERS) -> Path:
    """Save the tiny model and its tokenizer in ``folder`` (a local LM spec ``load_base_lm`` takes)."""
    if words is None:
        from tokalign.align.sources.shapes import CAPTION_WORDS

        words = CAPTION_WORDS
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _vocab(words)
    tiny_llama_model(len(vocab), tied=tied, seed=seed, layers=layers).save_pretrained(folder)
    _tokenizer(vocab).save_pretrained(folder)
    return folder
