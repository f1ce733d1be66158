"""``tokalign decode``: image tokens back to PNG images, with the tokenizer that made them.

Tokens come from corpus rows (``corpus`` + ``indices``) or from a file
(``tokens_file``): a ``.npy`` of shape (L,), (N, L) or (N, h, w), or a
``.safetensors`` holding an ``image_tokens`` tensor (what generated samples
are saved as).  The tokenizer is the one the corpus manifest names (checked by
its sha256), or, for a file without a corpus, the one given by kind and path.
Each image is written atomically as ``{name}.png`` in ``out``, a new or empty folder or one an earlier decode
wrote (its marker ``.tokalign.json`` says so); another non-empty folder is refused.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokalign.align.formats import atomic, outputs
from tokalign.align.errors import TokalignError

log = logging.getLogger(__name__)
PNG_FORMAT = "tokalign-decode-png"  #: the format each decoded PNG declares in its text chunk


@dataclass(frozen=True)
class DecodeConfig:
    out: Path
    corpus: Path | None = None
    indices: tuple[int, ...] = ()
    tokens_file: Path | None = None
    image_tokenizer: str | None = None  # kmeans | movq, for a tokens file without a corpus
    image_tokenizer_path: str | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", Path(self.out))
        if self.corpus is None and self.tokens_file is None:
            raise TokalignError("pass --corpus with --index (corpus rows), or --tokens FILE (with --corpus or --image-tokenizer)")
        if self.corpus is not None and self.tokens_file is None and not self.indices:
            raise TokalignError("pass --index N (repeatable, or A:B) to choose which corpus rows to decode")
        if self.tokens_file is not None and self.indices:
            raise TokalignError("--index selects corpus rows; with --tokens every row of the file is decoded")
        if self.corpus is None and self.image_tokenizer not in ("kmeans", "movq"):
            raise TokalignError("decoding a tokens file without --corpus needs --image-tokenizer kmeans|movq and "
                                "--image-tokenizer-path")
        if self.image_tokenizer is not None and not self.image_tokenizer_path:
            raise TokalignError(f"--image-tokenizer {self.image_tokenizer} needs --image-tokenizer-path")


def decode_tokens(config: DecodeConfig) -> list[Path]:
    """Write one PNG per token row; return their paths.  ``out`` follows the output rule (outputs.py)."""
    inputs = tuple(p for p in (config.corpus,) if p is not None)
    outputs.claim_output_dir(config.out, outputs.DECODE, inputs=inputs)
    tokens, names, tokenizer = _gather(config)
    if tokens.shape[1] != tokenizer.tokens_per_image:
        raise TokalignError(f"the tokens have {tokens.shape[1]} ids per image but the {tokenizer.kind} tokenizer makes "
                            f"{tokenizer.tokens_per_image}; pass the tokenizer they were made with")
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    for name in names:  # an earlier decode's PNG is replaced; a file of the user's is never
        outputs.check_output_file(config.out / f"{name}.png", PNG_FORMAT, option="--out", force=None)
    outputs.write_marker(config.out, outputs.DECODE)
    info = PngInfo()
    info.add_text(outputs.PNG_FORMAT_KEY, PNG_FORMAT)
    paths = []
    for start in range(0, len(tokens), 16):
        for image, name in zip(tokenizer.decode(tokens[start:start + 16]), names[start:start + 16]):
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG", pnginfo=info)
            path = config.out / f"{name}.png"
            atomic.write_bytes(path, buffer.getvalue())
            paths.append(path)
    log.debug("wrote %d images to %s", len(paths), config.out)
    return paths


def _gather(config: DecodeConfig):
    from tokalign.align.image_tokenizers.registry import build_image_tokenizer, tokenizer_for_identity

    corpus = None
    if config.corpus is not None:
        from tokalign.align.formats.corpus import open_corpus

        corpus = open_corpus(config.corpus)
    if config.tokens_file is not None:
        tokens = read_tokens_file(Path(config.tokens_file))
        names = [f"{i:06d}" for i in range(len(tokens))]
    else:
        indices = np.asarray(config.indices, dtype=np.int64)
        bad = indices[(indices < 0) | (indices >= corpus.items)]
        if bad.size:
            raise TokalignError(f"--index {int(bad[0])} is out of range; the corpus has {corpus.items} items (0..{corpus.items - 1})")
        tokens = corpus.image_tokens(indices)
        names = [f"{int(i):06d}" for i in indices]
    if config.image_tokenizer is not None:
        tokenizer = build_image_tokenizer(config.image_tokenizer, config.image_tokenizer_path, device=config.device)
    else:
        tokenizer = tokenizer_for_identity(corpus.image_tokenizer, corpus.root, path=config.image_tokenizer_path,
                                           device=config.device)
    if tokens.size and int(tokens.max()) >= tokenizer.codebook_size:
        raise TokalignError(f"token id {int(tokens.max())} is outside the {tokenizer.kind} codebook of "
                            f"{tokenizer.codebook_size}; pass the tokenizer the tokens were made with")
    return tokens, names, tokenizer


def read_tokens_file(path: Path) -> np.ndarray:
    """(N, L) integer tokens from a .npy (L,), (N, L), (N, h, w) or a .safetensors ``image_tokens`` tensor."""
    if not path.is_file():
        raise TokalignError(f"tokens file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            tensors = load_file(str(path))
            if "image_tokens" not in tensors:
                raise TokalignError(f"{path} has no 'image_tokens' tensor (it has {', '.join(sorted(tensors)) or 'none'})")
            tokens = tensors["image_tokens"]
        else:
            tokens = np.load(path, allow_pickle=False)
    except TokalignError:
        raise
    except Exception as exc:  # numpy and safetensors raise several types for a bad file
        raise TokalignError(f"tokens file {path} is unreadable ({type(exc).__name__}); pass a .npy or .safetensors of token ids") from None
    if tokens.dtype.kind not in "iu" or tokens.ndim not in (1, 2, 3) or tokens.size == 0:
        raise TokalignError(f"tokens file {path} holds {tokens.dtype} of shape {tokens.shape}; expected integer ids of "
                            "shape (L,), (N, L) or (N, h, w)")
    if tokens.ndim == 1:
        tokens = tokens[None]
    tokens = tokens.reshape(len(tokens), -1)
    if int(tokens.min()) < 0:
        raise TokalignError(f"tokens file {path} holds negative token ids")
    return tokens.astype(np.int64)
