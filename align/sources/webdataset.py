"""The ``webdataset`` input: tar shards in img2dataset's layout, read as a stream, with every damaged region recorded.

``--input`` is one tar (``.tar``, ``.tar.gz``, ``.tgz``), a folder (its tar
files, sorted by name, not recursive), a brace pattern such as
``shards/{00000..00099}.tar`` (expanded by webdataset's own
``expand_urls``: several braces and ``::``-joined lists work), or remote URLs
(``pipe:...``, ``http(s)://...``, opened with webdataset's ``gopen``).  Each
tar is one part.

Members are grouped into samples as webdataset does: the key is the member
path up to the first dot of its base name, the suffix the rest, lower-cased;
consecutive members with the same key form one sample; ``__*__`` meta
members, non-regular members and names without a suffix are ignored.  A
sample's image is its first member with an image suffix (``.npy`` token
arrays instead for pretokenized input); its caption is the ``.txt`` member
(UTF-8, as is), else the ``caption`` field of the ``.json`` member.  A
suffix repeated within a sample, or a key that comes back after other keys,
is recorded as ``duplicate_key`` (the first one is used).

Damaged tars.  Python's ``tarfile`` (and so webdataset) stops *silently* at
an invalid header in the middle of a stream: ``TarFile.next`` treats it as
the end of the archive unless ``ignore_zeros`` is set.  So members are read
here with ``ignore_zeros=True``, which skips damaged header blocks and
resynchronises on the next valid header, and a hook on header parsing notes
every block that is neither a header nor zeros.  Each run of such blocks
between two members is one ``corrupt_tar`` record keyed ``PART@OFFSET``; the
members lost in it simply are not there (corrupt the header of ``KEY.jpg``
and sample ``KEY`` arrives with its caption but no image).  A tar that breaks
off (truncated download, bad compressed data) gives one ``corrupt_tar``
record, the sample being read is delivered with what it had, and the part
ends normally.  A file that is not a tar at all is one damaged region.
I/O errors (a file that vanished, a failing ``pipe:`` command) are not
damage: they raise ``TokalignError`` so that ``--resume`` can retry the part.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, ClassVar, Iterator

import numpy as np

from tokalign.align.errors import TokalignError
from tokalign.align.sources.samples import IMAGE_SUFFIXES, TOKEN_SUFFIX, Part, Payload, RawSample
from tokalign.align.sources.spec import SourceSpec, is_remote

log = logging.getLogger(__name__)

__all__ = ["TAR_SUFFIXES", "WebDatasetSource", "read_tar", "shard_urls", "split_member_name"]

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_IMAGE = frozenset(s.lstrip(".") for s in IMAGE_SUFFIXES)
_TOKENS = TOKEN_SUFFIX.lstrip(".")
_META = re.compile(r"__[^/]*__($|/)")  # webdataset's skip_meta
_NAME = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")  # webdataset's base_plus_ext
_BLOCK = tarfile.BLOCKSIZE
_BROKEN = (tarfile.TarError, zlib.error, EOFError)  # a stream that is not (or no longer) a readable tar


@dataclass(frozen=True)
class WebDatasetSource:
    """The tar shards ``urls`` (local paths or remote URLs) of ``spec``, one part each."""

    spec: SourceSpec
    urls: tuple[str, ...]
    kind: ClassVar[str] = "webdataset"

    @classmethod
    def open(cls, spec: SourceSpec) -> "WebDatasetSource":
        urls = shard_urls(str(spec.input))
        if all(_empty_tar(url) for url in urls):
            raise TokalignError(f"--input {spec.input} holds no data: {'every shard is' if len(urls) > 1 else 'the tar is'} "
                                "an empty archive; check the path or the download")
        log.info("webdataset %s: %d shards", spec.input, len(urls))
        return cls(spec, tuple(urls))

    def parts(self) -> list[Part]:
        return [Part(i, url, _fingerprint(url), url) for i, url in enumerate(self.urls)]

    def read(self, part: Part) -> Iterator[RawSample]:
        with _open_shard(part.locator, part.name) as stream:
            try:
                yield from read_tar(stream, part.name, tokens=self.spec.tokens)
            except OSError as exc:
                raise TokalignError(f"reading shard {part.name} failed ({exc}); check the file or URL and rerun "
                                    "with --resume") from None

    def describe(self) -> dict:
        return {"kind": self.kind, "input": self.spec.input, "shards": len(self.urls)}


# ---------------------------------------------------------------- finding the shards


def shard_urls(text: str) -> list[str]:
    """The shards ``--input`` names, in order; raises ``TokalignError`` when there are none or some are missing."""
    if not is_remote(text) and os.path.isdir(text):
        urls = sorted(str(p) for p in Path(text).iterdir() if p.name.endswith(TAR_SUFFIXES) and p.is_file())
        if not urls:
            raise TokalignError(f"folder {text} has no {'/'.join(TAR_SUFFIXES)} files; pass a folder of tar shards, "
                                "a tar file or a brace pattern")
        return urls
    from webdataset.shardlists import expand_urls

    urls = [url for url in expand_urls(text) if url]
    if not urls:
        raise TokalignError(f"--input {text!r} names no shards; pass a tar file, a folder of tars or a brace pattern")
    missing = [url for url in urls if not is_remote(url) and not os.path.isfile(url)]
    if missing and len(urls) == 1:
        raise TokalignError(f"shard {missing[0]} does not exist; pass an existing tar file, folder or brace pattern")
    if missing:
        raise TokalignError(f"{len(missing)} of {len(urls)} shards in {text} do not exist (first: {missing[0]}); "
                            "fix the pattern or the download")
    return urls


def _empty_tar(url: str, limit: int = 1 << 20) -> bool:
    """True for a local, uncompressed tar file without members (its end blocks only; 0 bytes is a corrupt tar)."""
    if is_remote(url) or not url.endswith(".tar"):
        return False
    try:
        with open(url, "rb") as handle:
            return 0 < os.fstat(handle.fileno()).st_size <= limit and not handle.read().strip(b"\0")
    except OSError:
        return False


def _fingerprint(url: str) -> dict:
    if is_remote(url):
        return {"url": url}
    try:
        stat = os.stat(url)
    except OSError:
        raise TokalignError(f"shard {url} disappeared after the input was listed; restore it or fix --input") from None
    return {"url": url, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


@contextmanager
def _open_shard(url: str, name: str) -> Iterator[IO[bytes]]:
    """The shard as a binary stream; a failing close (a ``pipe:`` command's exit status) counts once it was read."""
    try:
        if is_remote(url):
            from webdataset.gopen import gopen

            stream = gopen(url, "rb")
        else:
            stream = open(url, "rb")
    except (OSError, ValueError) as exc:
        raise TokalignError(f"cannot open shard {name} ({exc}); check the file or URL and rerun "
                            "with --resume") from None
    finished = False
    try:
        yield stream
        finished = True
    finally:
        try:
            stream.close()
        except OSError as exc:
            if finished:
                raise TokalignError(f"reading shard {name} failed ({exc}); check the file or URL and rerun "
                                    "with --resume") from None


# ---------------------------------------------------------------- scanning a tar stream


@dataclass
class _Damage:
    """What header parsing met since the last member: unreadable blocks, zero blocks, a cut-off header."""

    first_bad: int | None = None
    last_bad: int | None = None
    zeros: bool = False
    cut_at: int | None = None

    def bad(self, offset: int) -> None:
        self.first_bad = offset if self.first_bad is None else self.first_bad
        self.last_bad = offset

    def region(self) -> tuple[int, int] | None:
        """(offset, bytes) of the unreadable blocks, or None."""
        if self.first_bad is None or self.last_bad is None:
            return None
        return self.first_bad, self.last_bad + _BLOCK - self.first_bad


class _NotingTarInfo(tarfile.TarInfo):
    """A ``TarInfo`` whose header parsing tells the tar file about every block it rejects."""

    @classmethod
    def fromtarfile(cls, tar: "tarfile.TarFile") -> "tarfile.TarInfo":
        offset = tar.offset
        try:
            return super().fromtarfile(tar)
        except tarfile.EOFHeaderError:
            tar.damage.zeros = True  # type: ignore[attr-defined]
            raise
        except tarfile.InvalidHeaderError:
            tar.damage.bad(offset)  # type: ignore[attr-defined]
            raise
        except tarfile.TruncatedHeaderError:
            tar.damage.cut_at = offset  # type: ignore[attr-defined]
            raise


class _NotingTarFile(tarfile.TarFile):
    """``tarfile`` in stream mode with ``ignore_zeros``, keeping notes on what it skipped."""

    def __init__(self, *args, **kwargs) -> None:
        self.damage = _Damage()
        super().__init__(*args, **kwargs)


def _corrupt(name: str, offset: int, detail: str) -> RawSample:
    return RawSample(f"{name}@{offset}", skip=("corrupt_tar", detail))


def split_member_name(name: str) -> tuple[str | None, str | None]:
    """(key, suffix) of a tar member name as webdataset splits it: at the first dot of the base name."""
    match = _NAME.match(name)
    return (match.group(1), match.group(2)) if match else (None, None)


def read_tar(stream: IO[bytes], name: str, *, tokens: bool = False) -> Iterator[RawSample]:
    """The samples of one tar stream in tar order, with one ``corrupt_tar`` record per damaged region.

    A record is yielded as soon as its cause is met; a sample once its last
    member has been read (when the next key starts, or the tar ends: the
    record of a break or of the tar's end comes before the last sample).
    """
    try:
        tar = _NotingTarFile.open(fileobj=stream, mode="r|*", ignore_zeros=True, tarinfo=_NotingTarInfo)
    except _BROKEN as exc:
        yield _corrupt(name, 0, f"not a readable tar ({exc})")
        return
    sample = _SampleBuilder(name, tokens)
    position = 0  # where the next header should start
    member: tarfile.TarInfo | None = None
    reading = False  # inside a member's data (else looking for the next header)
    try:
        while (member := tar.next()) is not None:
            tar.members = []  # a stream needs no member list: keep memory flat
            key, suffix = _member_key(member)
            if key is not None and key != sample.key:
                yield from sample.finish()
            yield from _gap_record(tar.damage, name, position, member.offset)
            tar.damage, position = _Damage(), tar.offset
            if key is not None and suffix is not None:
                reading = True
                yield from sample.add(key, suffix.lower(), member, tar)
                reading = False
        yield from _end_record(tar.damage, name, position, tar.offset)
    except _BROKEN as exc:
        yield _break_record(name, member, reading, exc)
    yield from sample.finish()


def _break_record(name: str, member: tarfile.TarInfo | None, reading: bool, exc: Exception) -> RawSample:
    """The record of a stream that broke off while reading ``member``'s data, or while looking past it."""
    if member is None:
        return _corrupt(name, 0, f"the tar breaks off before its first member ({exc}); the rest of it is lost")
    where = "inside" if reading else "after"
    return _corrupt(name, member.offset, f"the tar breaks off {where} {member.name} (offset {member.offset}) ({exc}); "
                                         "the rest of it is lost")


def _member_key(member: tarfile.TarInfo) -> tuple[str | None, str | None]:
    if not member.isreg() or _META.match(member.name):
        return None, None
    key, suffix = split_member_name(member.name)
    if key is None:
        log.debug("ignoring tar member %s: its name has no suffix", member.name)
    return key, suffix


def _gap_record(damage: _Damage, name: str, position: int, header: int) -> Iterator[RawSample]:
    region = damage.region()
    if region is not None:
        assert position <= region[0] and region[0] + region[1] <= header, (position, region, header)
        yield _corrupt(name, region[0], f"{region[1]} bytes unreadable at offset {region[0]}")


def _end_record(damage: _Damage, name: str, position: int, end: int) -> Iterator[RawSample]:
    """The record for what follows the last member: damage, a cut-off header, or a missing end marker."""
    region = damage.region()
    if region is not None:
        yield _corrupt(name, region[0], f"{end - region[0]} bytes unreadable at offset {region[0]} (up to the end)")
    elif damage.cut_at is not None:
        yield _corrupt(name, damage.cut_at, f"the tar ends inside a header at offset {damage.cut_at} "
                                            "(truncated download?)")
    elif not damage.zeros and position > 0:
        yield _corrupt(name, position, f"the tar ends at offset {position} without its end-of-archive blocks "
                                       "(truncated download?); later members may be lost")


# ---------------------------------------------------------------- members to samples


@dataclass
class _SampleBuilder:
    """The members of the current key, turned into one ``RawSample`` when the key is done."""

    name: str
    tokens: bool
    key: str | None = None
    start: int = 0
    image: Payload = None
    image_problem: str | None = None
    texts: dict[str, bytes] = field(default_factory=dict)  # "txt" / "json" -> bytes
    suffixes: set[str] = field(default_factory=set)
    seen: set[str] = field(default_factory=set)  # keys finished in this part
    repeated: bool = False

    def add(self, key: str, suffix: str, member: tarfile.TarInfo, tar: tarfile.TarFile) -> Iterator[RawSample]:
        if key != self.key:
            self._start(key, member.offset)
        if self.repeated:
            return
        if suffix in self.suffixes:
            yield RawSample(key, skip=("duplicate_key", f"{member.name} repeats suffix .{suffix} of key {key} in "
                                                        f"{self.name}; the first one is used"))
            return
        self.suffixes.add(suffix)
        if suffix in ("txt", "json"):
            self.texts[suffix] = _member_bytes(tar, member)
        elif (suffix == _TOKENS if self.tokens else suffix in _IMAGE) and self.image is None:
            self._set_image(_member_bytes(tar, member))

    def finish(self) -> Iterator[RawSample]:
        """The current sample (if any), and reset."""
        if self.key is None:
            return
        key, self.key = self.key, None
        self.seen.add(key)
        if self.repeated:
            yield RawSample(key, skip=("duplicate_key", f"key {key} comes back at offset {self.start} of {self.name} "
                                                        "after other keys; the first one is used"))
        elif self.image_problem is not None:
            yield RawSample(key, skip=("unreadable_image", self.image_problem))
        else:
            caption, problem = _caption(self.texts, key)
            yield RawSample(key, self.image, caption) if problem is None else \
                RawSample(key, skip=("unreadable_caption", problem))

    def _start(self, key: str, offset: int) -> None:
        self.key, self.start, self.repeated = key, offset, key in self.seen
        self.image, self.image_problem = None, None
        self.texts, self.suffixes = {}, set()

    def _set_image(self, data: bytes) -> None:
        if not self.tokens:
            self.image = data
            return
        try:
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except Exception as exc:  # numpy raises several types for a damaged or pickled file
            self.image_problem = f"{self.key}.npy in {self.name} does not load ({type(exc).__name__}: {exc})"
            return
        if not isinstance(array, np.ndarray):
            self.image_problem = f"{self.key}.npy in {self.name} is an .npz archive, not one .npy array"
            return
        self.image = array


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    handle = tar.extractfile(member)
    assert handle is not None, member.name  # only regular members get here
    return handle.read()


def _caption(texts: dict[str, bytes], key: str) -> tuple[str | None, str | None]:
    """(caption, None) from the .txt member, else the .json member's "caption"; (None, problem) when unreadable."""
    if "txt" in texts:
        try:
            return texts["txt"].decode("utf-8"), None
        except UnicodeDecodeError as exc:
            return None, f"{key}.txt is not valid UTF-8 ({exc.reason} at byte {exc.start})"
    if "json" not in texts:
        return None, None
    try:
        record = json.loads(texts["json"])
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        return None, f"{key}.json is not valid JSON ({exc})"
    if not isinstance(record, dict):
        return None, f"{key}.json holds a {type(record).__name__}, not an object with a caption field"
    caption = record.get("caption")
    if caption is not None and not isinstance(caption, str):
        return None, f"{key}.json has a caption of type {type(caption).__name__}, not text"
    return caption, None
