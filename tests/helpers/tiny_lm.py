"""A tiny causal LM on disk, built offline, for tests that need a real LM folder.

``make_tiny_lm(folder, words)`` writes what ``AutoModelForCausalLM`` and
``AutoTokenizer`` expect (``config.json``, ``model.safetensors``, tokenizer
files), so ``tokalign.align.lm.load.load_frozen_lm(str(folder))`` loads it like any
local Hugging Face model.  Nothing is downloaded.

Vocabulary: ids 0-3 are ``[PAD] [UNK] [BOS] [EOS]``; ``words`` follow in the
given order (id 4 is ``words[0]``).  The tokenizer is word level: it splits on
whitespace and punctuation, matches words exactly (case-sensitive) and maps
anything else to ``[UNK]``; with ``add_special_tokens=True`` it prepends
``[BOS]``, like many real LM tokenizers.  The embedding rows are drawn from a
generator seeded with ``seed``, so they are identical across runs and machines;
the input and output embeddings are tied, like SmolLM2's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = range(len(SPECIAL_TOKENS))
EMBEDDING_STD = 0.5


def _vocab(words: Sequence[str]) -> dict[str, int]:
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for word in words:
        if not word or any(ch.isspace() for ch in word):
            raise ValueError(f"tiny LM words must be non-empty and contain no whitespace: {word!r}")
        vocab.setdefault(word, len(vocab))
    return vocab


def _tokenizer(vocab: dict[str, int]):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[BOS] $A", pair="[BOS] $A $B", special_tokens=[("[BOS]", BOS_ID)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", bos_token="[BOS]", eos_token="[EOS]"
    )


def _model(vocab_size: int, d_model: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    heads = 4 if d_model % 8 == 0 else 1
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=64,
        tie_word_embeddings=True,
        pad_token_id=PAD_ID,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randn(vocab_size, d_model, generator=generator) * EMBEDDING_STD
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(rows)
    return model


def make_tiny_lm(folder: Path, words: Sequence[str], d_model: int = 32, seed: int = 0) -> Path:
    """Save a tiny random ``LlamaForCausalLM`` and its word-level tokenizer in ``folder``.

    Returns ``folder``.  The same ``words``, ``d_model`` and ``seed`` give the
    same embedding rows every time.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _vocab(words)
    _model(len(vocab), d_model, seed).save_pretrained(folder, safe_serialization=True)
    _tokenizer(vocab).save_pretrained(folder)
    return folder
