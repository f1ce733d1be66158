"""Builders of small WebDataset tar shards in img2dataset's layout, for tests.

:func:`make_shards` writes ``folder/00000.tar``, ``folder/00001.tar``, ...
where each good sample is three members, as img2dataset writes them::

    KEY.jpg (or KEY.png)   a 256 x 256 shape scene (tokalign.align.sources.shapes)
    KEY.txt                its caption
    KEY.json               {"caption": ..., "key": KEY}

Good keys are ``SSSSSIIII`` (shard, index), like img2dataset's.  With
``defects=True`` the shards also hold one sample of each kind of defect below,
keyed ``SSSSS-what`` and spread round-robin over the shards (see
:data:`DEFECTS`).  It returns the brace pattern and what the full
``tokalign tokenize`` pipeline must make of the shards (with its defaults
``--image-size 256`` and ``--min-side 64``), as ``expected``::

    {"kept": int, "skipped": {reason: count}, "adjusted": {reason: count}, "kept_keys": [key, ...]}

(counts of zero are left out, as in a corpus manifest; ``kept_keys`` in corpus
order: shard by shard, tar order within a shard).  Each defect hits exactly
one reason given the pipeline's check order in ``samples.py``.

:func:`make_token_shards` writes pretokenized shards (``KEY.npy`` + ``KEY.txt``).
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from tokalign.align.sources.shapes import make_scene, render

GARBAGE = b"this is not an image, just some bytes"
PIPELINE_IMAGE_SIZE = 256  # the pipeline's default --image-size: smaller images are upscaled
PIPELINE_MIN_SIDE = 64  # the pipeline's default --min-side: smaller images are skipped

# defect name -> (the pipeline's verdict, what the sample is)
DEFECTS: dict[str, tuple[str, str]] = {
    "garbage-image": ("skip:unreadable_image", "KEY.jpg holds bytes that are not an image"),
    "truncated-jpeg": ("skip:unreadable_image", "KEY.jpg is the first half of a JPEG"),
    "no-caption": ("skip:no_caption", "KEY.png and a KEY.json whose caption is null (no .txt)"),
    "orphan-caption": ("skip:no_image", "KEY.txt and KEY.json, no image"),
    "empty-caption": ("skip:empty_caption", 'KEY.txt is "   "'),
    "grayscale": ("keep:grayscale", "KEY.png is a grayscale (mode L) image"),
    "alpha": ("keep:alpha", "KEY.png is RGBA with a half-transparent band"),
    "too-small": ("skip:too_small", "KEY.png is 40 x 50 pixels"),
    "small": ("keep:upscaled", "KEY.jpg is 100 x 120 pixels"),
    "json-caption": ("keep:", "KEY.jpg and KEY.json, no .txt"),
    "corrupt-header": ("skip:no_image", "the tar header of KEY.jpg is overwritten: one corrupt_tar record too"),
    "bad-json": ("skip:unreadable_caption", "KEY.jpg and a KEY.json that is not JSON (no .txt)"),
}
CORRUPT_MEMBER = "corrupt-header"


@dataclass
class _Sample:
    key: str
    members: list[tuple[str, bytes]]  # (suffix, data) in tar order
    verdict: str  # "keep:reason,reason" or "skip:reason"
    corrupt: str | None = None  # suffix of the member whose header is to be damaged
    good: bool = False  # a plain sample whose image is image_size pixels square


@dataclass
class _Tally:
    kept_keys: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    adjusted: dict[str, int] = field(default_factory=dict)

    def count(self, key: str, verdict: str, upscaled: bool) -> None:
        kind, _, reasons = verdict.partition(":")
        if kind == "skip":
            self.skipped[reasons] = self.skipped.get(reasons, 0) + 1
            return
        self.kept_keys.append(key)
        for reason in [r for r in reasons.split(",") if r] + (["upscaled"] if upscaled else []):
            self.adjusted[reason] = self.adjusted.get(reason, 0) + 1

    def expected(self) -> dict:
        return {"kept": len(self.kept_keys), "skipped": {k: v for k, v in self.skipped.items() if v},
                "adjusted": {k: v for k, v in self.adjusted.items() if v}, "kept_keys": list(self.kept_keys)}


def encode(image: np.ndarray | Image.Image, fmt: str = "PNG") -> bytes:
    """``image`` encoded as PNG or JPEG bytes."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt)
    return buffer.getvalue()


def scene_image(seed: int, index: int, size: int = 256) -> tuple[Image.Image, str]:
    """Shape scene ``index`` of ``seed`` as a PIL RGB image, and its caption."""
    scene = make_scene(seed, index)
    return Image.fromarray(render(scene, size)[0]), scene.caption


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    """A plain tar at ``path`` holding ``members`` (name, data) in order."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            tar.addfile(info, io.BytesIO(data))


def damage_header(path: Path, member: str) -> tuple[int, int]:
    """Overwrite the 512-byte header of ``member`` in the tar at ``path`` with junk.

    Returns (header offset, bytes of the damaged region: header plus data blocks),
    which is what the source must report.
    """
    with tarfile.open(path) as tar:
        info = tar.getmember(member)
    blocks = 1 + -(-info.size // tarfile.BLOCKSIZE)
    with open(path, "r+b") as handle:
        handle.seek(info.offset)
        handle.write((b"CORRUPT!" * 64)[:tarfile.BLOCKSIZE])
    return info.offset, blocks * tarfile.BLOCKSIZE


def _good(key: str, seed: int, index: int, size: int) -> _Sample:
    image, caption = scene_image(seed, index, size)
    fmt, suffix = ("JPEG", "jpg") if index % 2 == 0 else ("PNG", "png")
    return _Sample(key, _captioned(encode(image, fmt), suffix, caption, key), "keep:", good=True)


def _captioned(image: bytes | None, suffix: str, caption: str | None, key: str, *,
               txt: bool = True) -> list[tuple[str, bytes]]:
    """img2dataset's members for one sample: the image (if any), KEY.txt (if ``txt``) and KEY.json."""
    members = [] if image is None else [(suffix, image)]
    if txt:
        members.append(("txt", (caption or "").encode("utf-8")))
    return members + [("json", json.dumps({"caption": caption, "key": key}).encode("utf-8"))]


def _defect(what: str, key: str, seed: int, index: int) -> _Sample:
    """The sample for defect ``what`` (see :data:`DEFECTS`)."""
    image, caption = scene_image(seed, index)
    jpeg = encode(image, "JPEG")
    verdict = DEFECTS[what][0]
    members = {
        "garbage-image": lambda: _captioned(GARBAGE, "jpg", caption, key),
        "truncated-jpeg": lambda: _captioned(jpeg[: len(jpeg) // 2], "jpg", caption, key),
        "no-caption": lambda: _captioned(encode(image), "png", None, key, txt=False),
        "orphan-caption": lambda: _captioned(None, "", caption, key),
        "empty-caption": lambda: _captioned(jpeg, "jpg", "   ", key),
        "grayscale": lambda: _captioned(encode(image.convert("L")), "png", caption, key),
        "alpha": lambda: _captioned(encode(_half_transparent(image)), "png", caption, key),
        "too-small": lambda: _captioned(encode(image.resize((40, 50))), "png", caption, key),
        "small": lambda: _captioned(encode(image.resize((100, 120)), "JPEG"), "jpg", caption, key),
        "json-caption": lambda: _captioned(jpeg, "jpg", caption, key, txt=False),
        "corrupt-header": lambda: _captioned(jpeg, "jpg", caption, key),
        "bad-json": lambda: [("jpg", jpeg), ("json", b'{"caption": "a red circle')],
    }[what]()
    return _Sample(key, members, verdict, "jpg" if what == CORRUPT_MEMBER else None)


def _half_transparent(image: Image.Image) -> Image.Image:
    rgba = np.array(image.convert("RGBA"))
    rgba[: rgba.shape[0] // 2, :, 3] = 128
    return Image.fromarray(rgba)


def _write_shard(path: Path, samples: list[_Sample]) -> None:
    write_tar(path, [(f"{s.key}.{suffix}", data) for s in samples for suffix, data in s.members])
    for sample in samples:
        if sample.corrupt is not None:
            damage_header(path, f"{sample.key}.{sample.corrupt}")


def _pattern(folder: Path, n_shards: int) -> str:
    return f"{folder}/{{00000..{n_shards - 1:05d}}}.tar"


def make_shards(folder: Path, n_shards: int = 2, per_shard: int = 6, *, seed: int = 0, defects: bool = True,
                image_size: int = 256) -> tuple[str, dict]:
    """Write ``n_shards`` tars of ``per_shard`` good samples (plus the defects); return (brace pattern, expected).

    Good images are ``image_size`` pixels square (at least the pipeline's
    min-side; below its image size they count as ``upscaled``).  With
    ``defects``, defect k of :data:`DEFECTS` goes to shard ``k % n_shards``,
    right after that shard's good samples of the same rank.
    """
    assert n_shards >= 1 and per_shard >= 1 and image_size >= PIPELINE_MIN_SIDE
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tally, index = _Tally(), 0
    shards: list[list[_Sample]] = [[] for _ in range(n_shards)]
    for shard, samples in enumerate(shards):
        for i in range(per_shard):
            samples.append(_good(f"{shard:05d}{i:04d}", seed, index, image_size))
            index += 1
    if defects:
        for k, what in enumerate(DEFECTS):
            shard = k % n_shards
            position = min(2 * (k // n_shards + 1) - 1, len(shards[shard]))  # after good sample k // n_shards
            shards[shard].insert(position, _defect(what, f"{shard:05d}-{what}", seed, index))
            index += 1
        tally.skipped["corrupt_tar"] = 1
    for shard, samples in enumerate(shards):
        _write_shard(folder / f"{shard:05d}.tar", samples)
        for sample in samples:
            tally.count(sample.key, sample.verdict, sample.good and image_size < PIPELINE_IMAGE_SIZE)
    return _pattern(folder, n_shards), tally.expected()


def make_token_shards(folder: Path, n_shards: int, per_shard: int, grid: int = 32, codebook: int = 16384,
                      seed: int = 0) -> tuple[str, np.ndarray, list[str]]:
    """Pretokenized shards: ``KEY.npy`` (a ``grid`` x ``grid`` uint16 array of ids below ``codebook``) + ``KEY.txt``.

    Returns (brace pattern, the token arrays as (N, grid * grid) int64 in
    order, their captions in order).
    """
    assert n_shards >= 1 and per_shard >= 1 and 1 <= codebook <= 65536
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, codebook, size=(n_shards * per_shard, grid, grid)).astype(np.uint16)
    captions = [make_scene(seed, i).caption for i in range(len(tokens))]
    for shard in range(n_shards):
        members = []
        for i in range(shard * per_shard, (shard + 1) * per_shard):
            buffer = io.BytesIO()
            np.save(buffer, tokens[i], allow_pickle=False)
            key = f"{shard:05d}{i - shard * per_shard:04d}"
            members += [(f"{key}.npy", buffer.getvalue()), (f"{key}.txt", captions[i].encode("utf-8"))]
        write_tar(folder / f"{shard:05d}.tar", members)
    return _pattern(folder, n_shards), tokens.reshape(len(tokens), -1).astype(np.int64), captions
