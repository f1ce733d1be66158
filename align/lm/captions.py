"""The frozen caption side: bag-of-words vectors from the LM's input embeddings.

Caption ``j`` becomes ``v_j = mean_k E_lm[w_k]`` over its token ids.  The LM
is frozen and a caption holds ~30 tokens, so a fit computes the vectors of each
batch's captions when it needs them (``tokalign.align.fit.caption_ids``): memory does
not grow with the corpus.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.nn.functional as F

from tokalign.align.errors import TokalignError


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's full definition (vocabulary, merges, normalizers)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def text_tokenizer_identity(lm) -> dict:
    """What a corpus records about the tokenizer that made its caption ids."""
    return {"lm": lm.spec, "name": lm.identity.get("name", lm.spec), "sha256": tokenizer_fingerprint(lm.tokenizer),
            "vocab_size": lm.vocab_size, "add_special_tokens": False}


def check_caption_ids(flat_ids: np.ndarray, offsets: np.ndarray, vocab_size: int, records=None,
                      first_index: int = 0) -> None:
    """Refuse empty captions and ids outside the LM's vocabulary (one-line errors).

    Checks one run of captions; ``first_index`` is the corpus index of its first caption (for streamed
    checks, one shard or chunk at a time), ``records(i)`` names corpus item ``i`` in the message.
    """
    lengths = np.diff(offsets)
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        first = first_index + int(empty[0])
        which = f"item {first}" + (f" (key {records(first)!r})" if records else "")
        raise TokalignError(f"{empty.size} caption(s) are empty, first at {which}; rebuild the corpus without them")
    if flat_ids.size and (int(flat_ids.max()) >= vocab_size or int(flat_ids.min()) < 0):
        raise TokalignError(f"caption token id {int(flat_ids.max())} is outside the LM vocabulary ({vocab_size}); "
                            "the corpus was tokenized for another LM: pass the matching --lm or re-tokenize")


@torch.no_grad()
def caption_vectors(embeddings: torch.Tensor, flat_ids: np.ndarray, offsets: np.ndarray,
                    chunk: int = 65536) -> torch.Tensor:
    """L2-normalized mean embedding of every caption, (items, d) float32 on ``embeddings.device``."""
    out = []
    device = embeddings.device
    for lo in range(0, len(offsets) - 1, chunk):
        hi = min(lo + chunk, len(offsets) - 1)
        ids = torch.from_numpy(np.asarray(flat_ids[offsets[lo]:offsets[hi]], dtype=np.int64)).to(device)
        offs = torch.from_numpy(np.asarray(offsets[lo:hi] - offsets[lo], dtype=np.int64)).to(device)
        out.append(F.normalize(F.embedding_bag(ids, embeddings, offs, mode="mean"), dim=-1))
    return torch.cat(out) if out else embeddings.new_zeros((0, embeddings.shape[1]))
