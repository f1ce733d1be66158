"""Before sampling: can the samples be decoded to PNGs?  The corpus's image tokenizer, loaded and checked once.

:func:`image_decoder` answers with a :class:`Decoder`: the loaded tokenizer (identity and sha256 checked against
the generator's record, tokens per image and codebook size matching) or, when the generator's recorded corpus
is missing, damaged, holds no tokenizer weights (a pretokenized corpus), or its tokenizer cannot be loaded
here, a one-line ``notice``; sampling then writes the tokens only. A corpus or tokenizer path the user passed
(``--corpus``, ``--image-tokenizer-path``) that does not decode is refused instead: that is a fix to make before
any work, and nothing has been sampled yet.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokalign.align.errors import TokalignError
from tokalign.generate.model_folder import GeneratorRecord

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decoder:
    corpus: Path | None  # the corpus whose tokenizer decodes (None when none was found)
    tokenizer: Any | None  # an image tokenizer with ``decode``; None: tokens only
    notice: str | None = None  # why there are no PNGs

    @property
    def decodes(self) -> bool:
        return self.tokenizer is not None


def image_decoder(record: GeneratorRecord, corpus: Path | None = None, tokenizer_path: str | None = None,
                  device: str = "cpu") -> Decoder:
    """The decoder for this generator's samples, or a notice why there is none (see the module docstring)."""
    from tokalign.generate.sample.loading import corpus_for_decoding

    explicit = corpus is not None or tokenizer_path is not None
    try:
        root = corpus_for_decoding(record, corpus)
    except TokalignError as exc:
        if corpus is not None:
            raise
        return Decoder(None, None, f"no PNGs: {exc}")
    try:
        tokenizer = _load(record, root, tokenizer_path, device)
    except TokalignError as exc:
        if explicit:
            raise
        return Decoder(root, None, f"no PNGs: {exc}")
    except Exception as exc:  # a missing optional package (diffusers for MoVQ), damaged weights, ...
        if explicit:
            raise TokalignError(f"the image tokenizer of {root} does not load ({type(exc).__name__}: "
                                f"{_first_line(exc)}); pass another --image-tokenizer-path or --corpus") from None
        return Decoder(root, None, f"no PNGs: the image tokenizer of {root} does not load here "
                                   f"({type(exc).__name__}: {_first_line(exc)})")
    return Decoder(root, tokenizer)


def _load(record: GeneratorRecord, root: Path, tokenizer_path: str | None, device: str):
    import json

    from tokalign.align.image_tokenizers.registry import tokenizer_for_identity

    from tokalign.align.formats.corpus import read_manifest

    identity = read_manifest(root)["image_tokenizer"]
    tokenizer = tokenizer_for_identity(identity, root, path=tokenizer_path, device=device)
    if tokenizer.tokens_per_image != record.tokens_per_image or tokenizer.codebook_size != record.layout.codebook_size:
        raise TokalignError(f"the image tokenizer of {root} makes {tokenizer.tokens_per_image} tokens of "
                            f"{tokenizer.codebook_size} codes per image, the generator samples "
                            f"{record.tokens_per_image} of {record.layout.codebook_size}")
    return tokenizer


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else "no message"
