"""Nearest neighbours between image tokens and the frozen LM's text tokens (paper, section 3.2).

The paper's probe: after the fit, which text tokens lie closest to an image
token?  Closeness is cosine similarity between a row of the fitted table and
the LM's input embedding rows; the reverse direction asks which image tokens
lie closest to one text token.

Search is exact: both sides are L2-normalized and a FAISS ``IndexFlatIP``
returns the top k inner products (= cosines), moved to all GPUs when
``faiss.get_num_gpus() > 0`` and never otherwise (``index_cpu_to_all_gpus``
with no GPU silently returns an empty index).  An all-zero row has cosine 0
with everything.  The LM is never loaded: the embeddings and tokenizer stored
in the run's ``lm/`` folder are enough.

:func:`find_neighbors` is the one entry point the CLI calls; it returns data
(:class:`NeighborsResult`) and, with ``show``, writes a PNG of the image
tokens involved, pasted from the k-means tokenizer's centroid patches.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from tokalign.align.errors import TokalignError
from tokalign.align.formats import outputs
from tokalign.align.search.faiss_ip import exact_ip_search, normalized  # noqa: F401  (re-exported)

from tokalign.probes.run_artifacts import RunArtifacts, open_run

logger = logging.getLogger(__name__)

IMAGE_TO_TEXT = "image->text"
TEXT_TO_IMAGE = "text->image"
TILE = 64  # pixels per rendered patch side (nearest-neighbour upscaling)
COLUMNS = 10
SHOW_FORMAT = "tokalign-neighbors-png"  #: the format the --show PNG declares in its text chunk


@dataclass(frozen=True)
class NeighborsQuery:
    """One question: exactly one of ``image_token``, ``text_token`` (text, must be one token) or ``text_id``."""

    run: Path
    image_token: int | None = None
    text_token: str | None = None
    text_id: int | None = None
    k: int = 10
    show: Path | None = None  #: write a PNG of the image tokens' patches here

    def __post_init__(self) -> None:
        given = [name for name, value in (("--image-token", self.image_token), ("--text-token", self.text_token),
                                          ("--text-id", self.text_id)) if value is not None]
        if len(given) != 1:
            raise TokalignError("pass exactly one of --image-token, --text-token or --text-id"
                                + (f" (got {', '.join(given)})" if given else ""))
        if self.k < 1:
            raise TokalignError(f"-k is {self.k}; ask for at least 1 neighbour")
        if self.show is not None and Path(self.show).is_dir():
            raise TokalignError(f"--show {self.show} is a folder; pass a .png file name")

    @property
    def direction(self) -> str:
        return IMAGE_TO_TEXT if self.image_token is not None else TEXT_TO_IMAGE


@dataclass(frozen=True)
class Token:
    """An image token (``token``/``display``/``special`` unset) or a text token."""

    id: int
    token: str | None = None  #: the vocabulary piece as stored (``Ġred``)
    display: str | None = None  #: readable (``␣red``, ``[special] <|im_start|>``)
    special: bool = False


@dataclass(frozen=True)
class Neighbor:
    rank: int
    token: Token
    score: float  #: cosine similarity


@dataclass(frozen=True)
class NeighborsResult:
    run: Path
    direction: str
    query: Token
    neighbors: tuple[Neighbor, ...]
    searched: int  #: rows searched (text vocabulary or codebook)
    device: str  #: "cpu" or "gpu" (where FAISS searched)
    show: Path | None = None

    def to_json(self) -> dict[str, Any]:
        kind = "image_token" if self.direction == IMAGE_TO_TEXT else "text_token"
        other = "text_token" if self.direction == IMAGE_TO_TEXT else "image_token"
        rows = [{"rank": n.rank, **_token_json(n.token, other), "score": n.score} for n in self.neighbors]
        return {"run": str(self.run), "direction": self.direction, "query": _token_json(self.query, kind),
                "k": len(rows), "searched": self.searched, "device": self.device, "neighbors": rows,
                "show": str(self.show) if self.show else None}


def _token_json(token: Token, kind: str) -> dict[str, Any]:
    if kind == "image_token":
        return {"kind": kind, "id": token.id}
    return {"kind": kind, **asdict(token)}


# ------------------------------------------------------------------ queries


def find_neighbors(query: NeighborsQuery) -> NeighborsResult:
    """Answer ``query`` on its run; with ``query.show``, also write the PNG."""
    if query.show is not None:  # never onto a table, checkpoint or manifest (the output rule)
        outputs.check_output_file(Path(query.show), SHOW_FORMAT, option="--show", force=None)
    run = open_run(query.run)
    image_tokenizer = run.image_tokenizer() if query.show is not None else None  # fail before searching
    if query.direction == IMAGE_TO_TEXT:
        result = image_to_text(run, query.image_token, query.k)
    else:
        result = text_to_image(run, resolve_text_id(run, query.text_token, query.text_id), query.k)
    if query.show is not None:
        ids = [result.query.id] if query.direction == IMAGE_TO_TEXT else [n.token.id for n in result.neighbors]
        render_image_tokens(image_tokenizer, ids, query.show)
        result = replace(result, show=query.show)
    return result


def _check_k(k: int, size: int, what: str) -> None:
    if k > size:
        raise TokalignError(f"-k {k} is larger than the {size} {what}; pass -k {size} or less")


def image_to_text(run: RunArtifacts, image_token: int, k: int) -> NeighborsResult:
    """The ``k`` text tokens whose LM input embeddings are closest to image token ``image_token``."""
    codebook = run.codebook_size
    if not 0 <= image_token < codebook:
        raise TokalignError(f"image token {image_token} is outside the codebook: this run has {codebook} codes "
                            f"(0..{codebook - 1})")
    embeddings = run.embeddings
    _check_k(k, len(embeddings), "text tokens of the LM's vocabulary")
    scores, ids, device = exact_ip_search(run.table[image_token], embeddings, k)
    vocab = run.vocab
    rows = tuple(Neighbor(rank, _text_token(vocab, int(i)), float(s))
                 for rank, (i, s) in enumerate(zip(ids[0], scores[0]), start=1))
    return NeighborsResult(run.run, IMAGE_TO_TEXT, Token(int(image_token)), rows, len(embeddings), device)


def text_to_image(run: RunArtifacts, text_id: int, k: int) -> NeighborsResult:
    """The ``k`` image tokens whose fitted rows are closest to the LM input embedding of ``text_id``."""
    table = run.table
    _check_k(k, len(table), "image tokens of the codebook")
    scores, ids, device = exact_ip_search(run.embeddings[text_id], table, k)
    rows = tuple(Neighbor(rank, Token(int(i)), float(s)) for rank, (i, s) in enumerate(zip(ids[0], scores[0]), start=1))
    return NeighborsResult(run.run, TEXT_TO_IMAGE, _text_token(run.vocab, text_id), rows, len(table), device)


def _text_token(vocab, token_id: int) -> Token:
    return Token(token_id, vocab.piece(token_id), vocab.display(token_id), vocab.is_special(token_id))


def resolve_text_id(run: RunArtifacts, text: str | None, text_id: int | None) -> int:
    """The LM token id meant by ``--text-id`` or by ``--text-token`` (which must encode to exactly one id)."""
    rows = len(run.embeddings)
    if text_id is not None:
        if not 0 <= text_id < rows:
            raise TokalignError(f"text token id {text_id} is outside the LM's vocabulary (0..{rows - 1})")
        return int(text_id)
    vocab = run.vocab
    ids = vocab.encode(text)
    if not ids:
        raise TokalignError(f"--text-token {text!r} encodes to no token; pass a non-empty token such as ' red'")
    if len(ids) > 1:
        parts = ", ".join(f"{i} {vocab.display(i)}" for i in ids)
        raise TokalignError(f"--text-token {text!r} is {len(ids)} tokens for this LM's tokenizer ({parts}); "
                            "pass one of them with --text-id, or a text that is a single token")
    if ids[0] == vocab.unk_id and text != vocab.piece(ids[0]):
        raise TokalignError(f"--text-token {text!r} is not in the LM's vocabulary (it encodes to the unknown token "
                            f"{vocab.display(ids[0])}); pass a token the LM knows")
    if ids[0] >= rows:
        raise TokalignError(f"--text-token {text!r} is id {ids[0]}, which has no embedding row (the LM has {rows})")
    return int(ids[0])


# ------------------------------------------------------------------ rendering


def token_patches(tokenizer, ids: list[int]) -> np.ndarray:
    """(n, patch, patch, 3) uint8 centroid patches of image tokens, through the tokenizer's ``decode``."""
    per_image = tokenizer.tokens_per_image
    side, patch = tokenizer.grid[0], tokenizer.patch
    out = []
    for start in range(0, len(ids), per_image):
        chunk = np.asarray(ids[start:start + per_image], dtype=np.int64)
        tokens = np.zeros((1, per_image), dtype=np.int64)
        tokens[0, :len(chunk)] = chunk
        image = tokenizer.decode(tokens)[0]
        grid = image.reshape(side, patch, side, patch, 3).transpose(0, 2, 1, 3, 4).reshape(-1, patch, patch, 3)
        out.append(grid[:len(chunk)])
    return np.concatenate(out)


def render_image_tokens(tokenizer, ids: list[int], path: Path, columns: int = COLUMNS) -> None:
    """Write a PNG grid of the tokens' patches (``TILE`` px each, id beneath), atomically."""
    from PIL import Image, ImageDraw
    from PIL.PngImagePlugin import PngInfo

    from tokalign.align.formats.atomic import atomic_path

    path = Path(path)
    patches = token_patches(tokenizer, list(ids))
    scale = max(1, TILE // tokenizer.patch)
    tile, label, gap = tokenizer.patch * scale, 12, 4
    cols = min(columns, len(patches))
    rows = -(-len(patches) // cols)
    canvas = Image.new("RGB", (cols * (tile + gap) + gap, rows * (tile + label + gap) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for n, (token, pixels) in enumerate(zip(ids, patches)):
        x, y = gap + (n % cols) * (tile + gap), gap + (n // cols) * (tile + label + gap)
        canvas.paste(Image.fromarray(pixels.repeat(scale, 0).repeat(scale, 1)), (x, y))
        draw.text((x, y + tile), str(token), fill="black")
    try:
        with atomic_path(path) as tmp:
            info = PngInfo()
            info.add_text(outputs.PNG_FORMAT_KEY, SHOW_FORMAT)  # marks the file as ours: a later --show replaces it
            canvas.save(tmp, format="PNG", pnginfo=info)
    except OSError as exc:
        raise TokalignError(f"cannot write {path}: {exc.strerror or exc}") from None
    logger.debug("wrote %d image-token patches to %s", len(ids), path)
