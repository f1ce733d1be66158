"""The WebDataset source: shard expansion, grouping members into samples, and damaged tars recorded, never lost."""

from __future__ import annotations

import gzip
import io
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from wds_fixtures import DEFECTS, GARBAGE, damage_header, make_shards, make_token_shards, write_tar
from tokalign.align.errors import TokalignError
from tokalign.align.sources.samples import RawSample
from tokalign.align.sources.shapes import make_scene
from tokalign.align.sources.webdataset import WebDatasetSource, read_tar, split_member_name
from tokalign.align.sources.spec import SourceSpec, open_source

ABC = [("a.jpg", b"image a"), ("a.txt", b"caption a"), ("b.jpg", b"image b" * 300), ("b.txt", b"caption b"),
       ("c.jpg", b"image c"), ("c.txt", b"caption c")]


def _samples(input_: str | Path, **kw) -> list[RawSample]:
    source = WebDatasetSource.open(SourceSpec(str(input_), **kw))
    return [sample for part in source.parts() for sample in source.read(part)]


def _read(path: Path, **kw) -> list[RawSample]:
    with open(path, "rb") as stream:
        return list(read_tar(stream, path.name, **kw))


def _shape(samples: list[RawSample]) -> list[tuple]:
    """(key, has image, caption, skip reason) per sample."""
    return [(s.key, s.image is not None, s.caption, s.skip and s.skip[0]) for s in samples]


def _offset(path: Path, member: str) -> int:
    with tarfile.open(path) as tar:
        return tar.getmember(member).offset


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[str, dict, Path]:
    folder = tmp_path_factory.mktemp("wds")
    pattern, expected = make_shards(folder, n_shards=3, per_shard=4, seed=1, defects=True)
    return pattern, expected, folder


# ---------------------------------------------------------------- finding the shards


def test_brace_pattern_folder_and_single_tars_give_the_same_samples(shards, tmp_path):
    pattern, _, folder = shards
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "notes.txt").write_text("not a shard")  # ignored by the folder form
    (copy / "old").mkdir()
    shutil.copy(folder / "00000.tar", copy / "old" / "00000.tar")  # not searched: the folder form is not recursive
    by_pattern = _samples(pattern)
    by_folder = [RawSample(s.key.replace(str(copy), str(folder)), s.image, s.caption, s.skip) for s in _samples(copy)]
    one_by_one = [s for i in range(3) for s in _samples(folder / f"{i:05d}.tar")]
    assert len(by_pattern) == 3 * 4 + 12 + 1
    assert by_pattern == by_folder == one_by_one


def test_gzipped_tar_gives_the_same_samples_as_the_plain_tar(shards, tmp_path):
    _, _, folder = shards
    for suffix in (".tar.gz", ".tgz"):
        packed = tmp_path / f"00001{suffix}"
        packed.write_bytes(gzip.compress((folder / "00001.tar").read_bytes()))
        plain = _samples(folder / "00001.tar")
        assert _samples(packed) == [RawSample(s.key.replace(str(folder / "00001.tar"), str(packed)), s.image,
                                              s.caption, s.skip) for s in plain]


def test_several_braces_and_double_colon_lists_expand_in_webdataset_order(tmp_path):
    for name in ("0_a", "0_b", "1_a", "1_b", "extra"):
        write_tar(tmp_path / f"{name}.tar", [(f"{name}.txt", name.encode())])
    source = WebDatasetSource.open(SourceSpec(f"{tmp_path}/{{0..1}}_{{a,b}}.tar::{tmp_path}/extra.tar"))
    names = [Path(p.name).name for p in source.parts()]
    assert names == ["0_a.tar", "0_b.tar", "1_a.tar", "1_b.tar", "extra.tar"]
    assert [p.index for p in source.parts()] == [0, 1, 2, 3, 4]


def test_missing_shards_are_refused_naming_the_first_missing_and_the_count(tmp_path):
    for i in (0, 1, 3):
        write_tar(tmp_path / f"{i:05d}.tar", [("a.txt", b"x")])
    with pytest.raises(TokalignError) as error:
        WebDatasetSource.open(SourceSpec(f"{tmp_path}/{{00000..00005}}.tar"))
    message = str(error.value)
    assert message.startswith("3 of 6 shards in") and f"(first: {tmp_path}/00002.tar)" in message
    assert "fix the pattern or the download" in message
    with pytest.raises(TokalignError, match=r"shard .*/nothing\.tar does not exist"):
        WebDatasetSource.open(SourceSpec(str(tmp_path / "nothing.tar")))


def test_folder_without_tar_files_is_refused(tmp_path):
    with pytest.raises(TokalignError, match="has no .tar/.tar.gz/.tgz files"):
        WebDatasetSource.open(SourceSpec(str(tmp_path), format="webdataset"))
    (tmp_path / "readme.txt").write_text("no shards here")
    with pytest.raises(TokalignError, match="has no .tar/.tar.gz/.tgz files"):
        WebDatasetSource.open(SourceSpec(str(tmp_path), format="webdataset"))


def test_parts_fingerprint_local_files_and_describe_counts_shards(shards):
    pattern, _, folder = shards
    source = open_source(SourceSpec(pattern))
    assert isinstance(source, WebDatasetSource) and source.kind == "webdataset"
    parts = source.parts()
    stat = (folder / "00002.tar").stat()
    assert parts[2].name == parts[2].locator == f"{folder}/00002.tar"
    assert parts[2].fingerprint == {"url": f"{folder}/00002.tar", "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    assert source.describe() == {"kind": "webdataset", "input": pattern, "shards": 3}


def test_pipe_urls_are_read_through_gopen_and_fingerprinted_by_url(shards):
    _, _, folder = shards
    url = f"pipe:cat {folder}/00000.tar"
    source = WebDatasetSource.open(SourceSpec(url))
    assert [p.fingerprint for p in source.parts()] == [{"url": url}]
    assert [s.caption for s in source.read(source.parts()[0])] == [s.caption for s in _samples(folder / "00000.tar")]


def test_a_failing_pipe_command_stops_with_an_error_to_resume_from(tmp_path):
    source = WebDatasetSource.open(SourceSpec(f"pipe:cat {tmp_path}/absent.tar 2>/dev/null"))
    with pytest.raises(TokalignError, match="rerun with --resume"):
        list(source.read(source.parts()[0]))


def test_source_pickles_and_reads_the_same_after_unpickling(shards):
    pattern, _, _ = shards
    source = WebDatasetSource.open(SourceSpec(pattern))
    copy = pickle.loads(pickle.dumps(source))
    assert copy == source and copy.parts() == source.parts()
    assert list(copy.read(copy.parts()[1])) == list(source.read(source.parts()[1]))


# ---------------------------------------------------------------- members to samples


def _caption_of(key: str, seed: int = 1, per_shard: int = 4, n_shards: int = 3) -> str:
    """The scene caption make_shards gave ``key``: good keys are SSSSSIIII, defect k is scene n_shards*per_shard + k."""
    if key[5] == "-":
        return make_scene(seed, n_shards * per_shard + list(DEFECTS).index(key[6:])).caption
    return make_scene(seed, int(key[:5]) * per_shard + int(key[5:])).caption


def test_defect_shards_give_the_exact_sample_stream(shards):
    pattern, expected, folder = shards
    samples = _samples(pattern)
    damaged = _end_of(folder / "00001.tar", "000010003.json")
    cap = "CAPTION"
    assert [(s.key, s.image is not None, cap if s.caption and s.caption.strip() else s.caption, s.skip and s.skip[0])
            for s in samples] == [
        ("000000000", True, cap, None),
        ("00000-garbage-image", True, cap, None),
        ("000000001", True, cap, None),
        ("00000-orphan-caption", False, cap, None),
        ("000000002", True, cap, None),
        ("00000-alpha", True, cap, None),
        ("000000003", True, cap, None),
        ("00000-json-caption", True, cap, None),
        ("000010000", True, cap, None),
        ("00001-truncated-jpeg", True, cap, None),
        ("000010001", True, cap, None),
        ("00001-empty-caption", True, "   ", None),
        ("000010002", True, cap, None),
        ("00001-too-small", True, cap, None),
        ("000010003", True, cap, None),
        (f"{folder}/00001.tar@{damaged}", False, None, "corrupt_tar"),
        ("00001-corrupt-header", False, cap, None),
        ("000020000", True, cap, None),
        ("00002-no-caption", True, None, None),
        ("000020001", True, cap, None),
        ("00002-grayscale", True, cap, None),
        ("000020002", True, cap, None),
        ("00002-small", True, cap, None),
        ("000020003", True, cap, None),
        ("00002-bad-json", False, None, "unreadable_caption"),
    ]
    assert all(s.caption == _caption_of(s.key) for s in samples if s.caption and s.caption.strip())
    assert samples[15].skip[1].endswith(f" bytes unreadable at offset {damaged}")
    assert samples[1].image == GARBAGE and samples[0].image[:3] == b"\xff\xd8\xff"  # a JPEG
    assert expected["kept_keys"] == [s.key for s in samples if s.image is not None and s.caption and s.caption.strip()
                                     and s.key[6:] not in ("garbage-image", "truncated-jpeg", "too-small")]


def _end_of(path: Path, member: str) -> int:
    """Where the header after ``member`` starts (the end of its data, in whole blocks)."""
    with tarfile.open(path, ignore_zeros=True) as tar:
        info = tar.getmember(member)
    return info.offset_data + -(-info.size // 512) * 512


def test_corrupt_image_header_gives_one_corrupt_record_and_its_sample_without_image(tmp_path):
    path = tmp_path / "shard.tar"
    write_tar(path, ABC)
    offset, size = damage_header(path, "b.jpg")
    assert size == 512 + 5 * 512  # the header and the 2,100 bytes of b.jpg
    assert _read(path) == [
        RawSample("a", b"image a", "caption a"),
        RawSample(f"shard.tar@{offset}", skip=("corrupt_tar", f"{size} bytes unreadable at offset {offset}")),
        RawSample("b", None, "caption b"),
        RawSample("c", b"image c", "caption c"),
    ]


def test_plain_tarfile_stream_and_webdataset_stop_silently_at_a_mid_file_bad_header(tmp_path):
    """Why read_tar uses ignore_zeros: without it, TarFile.next() takes an invalid header for the end of the archive."""
    from webdataset.tariterators import tar_file_iterator

    path = tmp_path / "shard.tar"
    write_tar(path, ABC)
    damage_header(path, "b.jpg")
    with open(path, "rb") as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
        assert [member.name for member in tar] == ["a.jpg", "a.txt"]  # c.jpg, c.txt and b.txt lost, no error
    with open(path, "rb") as stream:
        assert [item["fname"] for item in tar_file_iterator(stream)] == ["a.jpg", "a.txt"]


def test_damaged_caption_header_inside_a_sample_is_recorded_before_that_sample(tmp_path):
    path = tmp_path / "shard.tar"
    write_tar(path, [("a.jpg", b"image a"), ("a.txt", b"caption a"), ("a.json", b'{"caption": "json a"}'),
                     ("b.jpg", b"image b"), ("b.txt", b"caption b")])
    offset, size = damage_header(path, "a.txt")
    assert _read(path) == [
        RawSample(f"shard.tar@{offset}", skip=("corrupt_tar", f"{size} bytes unreadable at offset {offset}")),
        RawSample("a", b"image a", "json a"),
        RawSample("b", b"image b", "caption b"),
    ]


def test_concatenated_tars_with_zero_blocks_between_them_are_not_damage(tmp_path):
    first, second = tmp_path / "1.tar", tmp_path / "2.tar"
    write_tar(first, ABC[:2])
    write_tar(second, ABC[2:])
    both = tmp_path / "both.tar"
    both.write_bytes(first.read_bytes() + second.read_bytes())
    assert _shape(_read(both)) == [("a", True, "caption a", None), ("b", True, "caption b", None),
                                   ("c", True, "caption c", None)]


def test_tar_truncated_inside_an_image_keeps_earlier_samples_and_records_the_break(tmp_path):
    path = tmp_path / "shard.tar"
    write_tar(path, ABC)
    with tarfile.open(path) as tar:
        b_jpg = tar.getmember("b.jpg")
    path.write_bytes(path.read_bytes()[:b_jpg.offset_data + 1000])
    samples = _read(path)
    assert _shape(samples) == [("a", True, "caption a", None),
                               (f"shard.tar@{b_jpg.offset}", False, None, "corrupt_tar"), ("b", False, None, None)]
    assert samples[1].skip[1].startswith(f"the tar breaks off inside b.jpg (offset {b_jpg.offset})")


def test_tar_truncated_inside_a_member_that_is_not_read_records_the_break_after_it(tmp_path):
    path = tmp_path / "shard.tar"
    write_tar(path, [("a.jpg", b"image a"), ("a.cls", b"7" * 2000), ("a.txt", b"caption a"), ("b.jpg", b"image b")])
    with tarfile.open(path) as tar:
        a_cls = tar.getmember("a.cls")
    path.write_bytes(path.read_bytes()[:a_cls.offset_data + 1000])
    samples = _read(path)
    assert _shape(samples) == [(f"shard.tar@{a_cls.offset}", False, None, "corrupt_tar"), ("a", True, None, None)]
    assert samples[0].skip[1].startswith(f"the tar breaks off after a.cls (offset {a_cls.offset})")


def test_tar_truncated_inside_a_caption_delivers_the_image_without_caption(tmp_path):
    path = tmp_path / "shard.tar"
    write_tar(path, [("a.jpg", b"image a"), ("a.txt", b"caption a" * 100), ("b.jpg", b"image b")])
    with tarfile.open(path) as tar:
        a_txt = tar.getmember("a.txt")
    path.write_bytes(path.read_bytes()[:a_txt.offset_data + 600])
    assert _shape(_read(path)) == [(f"shard.tar@{a_txt.offset}", False, None, "corrupt_tar"), ("a", True, None, None)]


def test_tar_cut_at_a_member_boundary_or_inside_a_header_is_recorded(tmp_path):
    path = tmp_path / "shard.tar"
    write_tar(path, ABC)
    b_jpg = _offset(path, "b.jpg")
    data = path.read_bytes()
    path.write_bytes(data[:b_jpg])  # no end-of-archive blocks: b and c are gone
    assert _read(path) == [  # at the end of a tar, its record comes before the last sample
        RawSample(f"shard.tar@{b_jpg}", skip=("corrupt_tar", f"the tar ends at offset {b_jpg} without its end-of-"
                                              "archive blocks (truncated download?); later members may be lost")),
        RawSample("a", b"image a", "caption a")]
    path.write_bytes(data[:b_jpg + 300])
    assert _read(path) == [
        RawSample(f"shard.tar@{b_jpg}", skip=("corrupt_tar", f"the tar ends inside a header at offset {b_jpg} "
                                              "(truncated download?)")),
        RawSample("a", b"image a", "caption a")]


@pytest.mark.parametrize("content", [b"", b"short junk", bytes(range(256)) * 40], ids=["empty", "short", "long"])
def test_file_that_is_not_a_tar_is_one_corrupt_record(tmp_path, content):
    path = tmp_path / "shard.tar"
    path.write_bytes(content)
    samples = _samples(path)
    assert [(s.key, s.skip[0]) for s in samples] == [(f"{path}@0", "corrupt_tar")]
    if len(content) > 512:
        assert samples[0].skip[1] == f"{len(content)} bytes unreadable at offset 0 (up to the end)"


def test_captions_come_from_txt_else_the_json_caption_field(tmp_path):
    path = tmp_path / "shard.tar"
    write_tar(path, [("a.jpg", b"A"), ("a.json", b'{"caption": "from json", "key": "a"}'),
                     ("b.jpg", b"B"), ("b.json", b'{"caption": null}'),
                     ("c.jpg", b"C"), ("c.json", b'{"key": "c"}'),
                     ("d.jpg", b"D"), ("d.txt", b"from txt"), ("d.json", b'{"caption": "ignored"}'),
                     ("e.jpg", b"E"), ("e.json", b'{"caption": 7}'),
                     ("f.jpg", b"F"), ("f.json", b'["caption"]'),
                     ("g.jpg", b"G"), ("g.json", b"{not json")])
    assert _shape(_read(path)) == [("a", True, "from json", None), ("b", True, None, None), ("c", True, None, None),
                                   ("d", True, "from txt", None), ("e", False, None, "unreadable_caption"),
                                   ("f", False, None, "unreadable_caption"), ("g", False, None, "unreadable_caption")]


def test_utf8_captions_are_delivered_unchanged_and_invalid_utf8_is_unreadable(tmp_path):
    caption = "  Ça coûte 5 € — 東京の猫 🐈\n"
    path = tmp_path / "shard.tar"
    write_tar(path, [("a.png", b"A"), ("a.txt", caption.encode("utf-8")), ("b.png", b"B"), ("b.txt", b"caf\xe9")])
    samples = _read(path)
    assert samples[0] == RawSample("a", b"A", caption)
    assert samples[1].key == "b" and samples[1].skip[0] == "unreadable_caption" and "UTF-8" in samples[1].skip[1]


def test_repeated_suffix_and_returning_key_are_duplicates_and_the_first_is_used(tmp_path):
    path = tmp_path / "shard.tar"
    write_tar(path, [("a.jpg", b"A"), ("a.txt", b"first"), ("a.txt", b"second"), ("b.jpg", b"B"), ("b.txt", b"b"),
                     ("a.jpg", b"A again"), ("a.txt", b"again")])
    samples = _read(path)
    assert _shape(samples) == [("a", False, None, "duplicate_key"), ("a", True, "first", None), ("b", True, "b", None),
                               ("a", False, None, "duplicate_key")]
    assert "repeats suffix .txt" in samples[0].skip[1] and "comes back" in samples[3].skip[1]


def test_meta_members_directories_and_suffixless_names_are_ignored_and_suffixes_lowercased(tmp_path):
    path = tmp_path / "shard.tar"
    with tarfile.open(path, "w") as tar:
        folder = tarfile.TarInfo("images")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, data in [("__meta__", b"{}"), ("README", b"hello"), ("images/x.JPG", b"X"), ("images/x.Txt", b"x"),
                           ("images/y.seg.png", b"mask"), ("images/y.txt", b"y")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert _read(path) == [RawSample("images/x", b"X", "x"), RawSample("images/y", None, "y")]


def test_split_member_name_matches_webdataset_base_plus_ext():
    from webdataset.tariterators import base_plus_ext

    for name in ["a.jpg", "dir/a.b.JPG", "a", ".hidden", "dir.x/a", "dir.x/a.txt", "a./b", "x.", "a/b/c.tar.gz"]:
        assert split_member_name(name) == base_plus_ext(name), name
    assert split_member_name("dir.x/k.seg.png") == ("dir.x/k", "seg.png")


def test_npy_members_are_token_payloads_with_spec_tokens(tmp_path):
    pattern, tokens, captions = make_token_shards(tmp_path, n_shards=2, per_shard=3, grid=4, codebook=50, seed=5)
    samples = _samples(pattern, tokens=True)
    assert [s.key for s in samples] == ["000000000", "000000001", "000000002", "000010000", "000010001", "000010002"]
    assert [s.caption for s in samples] == captions
    assert np.array_equal(np.stack([s.image.reshape(-1) for s in samples]), tokens)
    assert all(s.image.shape == (4, 4) and s.image.dtype == np.uint16 for s in samples)
    assert all(s.image is None for s in _samples(pattern, tokens=False))  # .npy is no image


def test_npy_that_does_not_load_is_an_unreadable_image(tmp_path):
    pickled = io.BytesIO()
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    path = tmp_path / "shard.tar"
    write_tar(path, [("a.npy", pickled.getvalue()), ("a.txt", b"a"), ("b.npy", b"junk"), ("b.txt", b"b"),
                     ("c.png", b"C"), ("c.txt", b"c")])
    assert _shape(_read(path, tokens=True)) == [("a", False, None, "unreadable_image"),
                                                ("b", False, None, "unreadable_image"), ("c", False, "c", None)]
