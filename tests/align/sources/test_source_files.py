"""The folder, parquet, saved-dataset and npy input sources: exact sample streams, parts, and refusals."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from file_fixtures import GARBAGE, make_hf_dataset, make_image_folder, make_parquet, make_token_npy, scene
from tokalign.align.errors import TokalignError
from tokalign.align.sources.folder import FolderSource
from tokalign.align.sources.npy import NpySource
from tokalign.align.sources.table import HFDiskSource, ParquetSource
from tokalign.align.sources.spec import SourceSpec, open_source

SPACED = "  Ünïcödé café — 日本語の説明  "


def _samples(source, parts=None) -> list:
    return [s for part in (parts if parts is not None else source.parts()) for s in source.read(part)]


def _summary(source) -> list[tuple]:
    """(key, image state, caption, skip reason) per sample; image state is 'bytes', 'tokens' or None."""
    def state(image):
        return None if image is None else "tokens" if isinstance(image, np.ndarray) else "bytes"

    return [(s.key, state(s.image), s.caption, s.skip[0] if s.skip else None) for s in _samples(source)]


def _refusal(spec: SourceSpec) -> str:
    with pytest.raises(TokalignError) as info:
        open_source(spec)
    message = str(info.value)
    assert "\n" not in message
    return message


def _caption(seed: int, index: int) -> str:
    return scene(seed, index)[1]


# --- folder ---------------------------------------------------------------------------------------------------------

def test_folder_with_defects_gives_the_exact_sample_stream(tmp_path):
    folder, expected = make_image_folder(tmp_path / "f", n=4, seed=1)
    source = open_source(SourceSpec(input=str(folder)))
    assert isinstance(source, FolderSource) and source.kind == "folder"
    assert _summary(source) == [
        ("captions.jsonl:3", None, None, "unreadable_caption"),
        ("empty.png", "bytes", "  ", None),
        ("garbage.jpg", "bytes", _caption(1, 7), None),
        ("img-000.png", "bytes", _caption(1, 0), None),
        ("img-000.png", None, None, "duplicate_key"),
        ("img-002.png", "bytes", _caption(1, 2), None),
        ("missing.png", None, _caption(1, 6), None),
        ("nocaption.png", "bytes", None, None),
        ("sub/img-001.jpg", "bytes", _caption(1, 1), None),
        ("sub/img-003.jpg", "bytes", _caption(1, 3), None),
    ]
    samples = {s.key: s for s in _samples(source) if not s.skip}
    assert samples["garbage.jpg"].image == GARBAGE
    assert samples["sub/img-001.jpg"].image == (folder / "sub" / "img-001.jpg").read_bytes()
    assert expected["kept_keys"] == ["img-000.png", "img-002.png", "sub/img-001.jpg", "sub/img-003.jpg"]


def test_jsonl_and_csv_captions_give_the_same_samples(tmp_path):
    streams = {}
    for kind in ("jsonl", "csv"):
        folder, _ = make_image_folder(tmp_path / kind, n=5, seed=2, captions=kind)
        streams[kind] = [(s.key, s.image, s.caption, s.skip and s.skip[0]) for s in _samples(open_source(
            SourceSpec(input=str(folder), part_size=3)))]
    unreadable = {kind: [row[0] for row in rows if row[3] == "unreadable_caption"] for kind, rows in streams.items()}
    assert unreadable == {"jsonl": ["captions.jsonl:3"], "csv": ["captions.csv:4"]}
    same = {kind: [row for row in rows if row[3] != "unreadable_caption"] for kind, rows in streams.items()}
    assert same["jsonl"] == same["csv"] and len(same["csv"]) == 10


def test_metadata_jsonl_is_found_when_there_is_no_captions_file(tmp_path):
    folder, _ = make_image_folder(tmp_path / "f", n=3, defects=False)
    (folder / "captions.jsonl").rename(folder / "metadata.jsonl")
    source = open_source(SourceSpec(input=str(folder)))
    assert Path(source.captions_path).name == "metadata.jsonl"
    assert [(key, caption) for key, _, caption, _ in _summary(source)] == [
        ("img-000.png", _caption(0, 0)), ("img-002.png", _caption(0, 2)), ("sub/img-001.jpg", _caption(0, 1))]


def test_captions_option_overrides_the_detected_file_relative_or_absolute(tmp_path):
    folder, _ = make_image_folder(tmp_path / "f", n=2, defects=False)
    (folder / "other.jsonl").write_text(json.dumps({"file": "img-000.png", "text": "a red circle"}) + "\n")
    for given in ("other.jsonl", str(folder / "other.jsonl")):
        rows = _summary(open_source(SourceSpec(input=str(folder), captions_file=given)))
        assert rows == [("img-000.png", "bytes", "a red circle", None), ("sub/img-001.jpg", "bytes", None, None)]


def test_nested_folder_keys_are_relative_posix_paths_and_suffixes_ignore_case(tmp_path):
    folder = tmp_path / "f"
    (folder / "a" / "b").mkdir(parents=True)
    (folder / "a" / "b" / "deep.PNG").write_bytes(b"png bytes")
    (folder / "a" / "top.JpEg").write_bytes(b"jpeg bytes")
    (folder / "a" / "notes.txt").write_text("not an image")
    rows = [{"path": "./a/b/deep.PNG", "caption": "deep"}, {"image": "a/top.JpEg", "caption": "top"},
            {"file_name": "../outside.png", "caption": "outside"}]
    (folder / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    source = open_source(SourceSpec(input=str(folder)))
    assert [(s.key, s.image, s.caption, s.skip and s.skip[0]) for s in _samples(source)] == [
        ("a/b/deep.PNG", b"png bytes", "deep", None), ("a/top.JpEg", b"jpeg bytes", "top", None),
        ("captions.jsonl:3", None, None, "unreadable_caption")]


def test_caption_rows_without_fields_or_with_non_string_captions_are_unreadable(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    lines = [json.dumps({"caption": "no file"}), json.dumps({"file_name": "x.png"}), "",
             json.dumps({"file_name": "y.png", "caption": 3}), json.dumps(["a", "list"]),
             json.dumps({"file_name": "z.png", "caption": "fine"})]
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n")
    rows = _summary(open_source(SourceSpec(input=str(folder))))
    assert rows == [(f"captions.jsonl:{n}", None, None, "unreadable_caption") for n in (1, 2, 4, 5)] + [
        ("z.png", None, "fine", None)]


def test_image_file_deleted_after_open_is_delivered_without_image(tmp_path):
    folder, _ = make_image_folder(tmp_path / "f", n=2, defects=False)
    source = open_source(SourceSpec(input=str(folder)))
    (folder / "img-000.png").unlink()
    assert [(s.key, s.image is None) for s in _samples(source)] == [("img-000.png", True), ("sub/img-001.jpg", False)]


def test_folder_of_token_files_delivers_int64_arrays(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    np.save(folder / "a.npy", np.arange(6, dtype=np.uint16).reshape(2, 3))
    (folder / "b.npy").write_bytes(b"not numpy")
    (folder / "c.png").write_bytes(b"ignored: not a token file")
    (folder / "captions.csv").write_text("file_name,caption\na.npy,first\nb.npy,second\n", encoding="utf-8")
    samples = _samples(open_source(SourceSpec(input=str(folder), tokens=True)))
    assert [s.key for s in samples] == ["a.npy", "b.npy"]
    assert samples[0].image.dtype == np.int64 and samples[0].image.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert samples[1].image == b"not numpy"  # left as bytes: the pipeline counts it as unreadable_image


def test_missing_folder_is_refused_in_one_line(tmp_path):
    assert "does not exist" in _refusal(SourceSpec(input=str(tmp_path / "nowhere"), format="folder"))


def test_folder_without_captions_file_is_refused_with_the_fix(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "a.png").write_bytes(b"x")
    message = _refusal(SourceSpec(input=str(tmp_path / "f")))
    assert "has no captions.jsonl/captions.csv/metadata.jsonl/metadata.csv" in message and "--captions" in message


def test_missing_captions_option_file_is_refused(tmp_path):
    folder, _ = make_image_folder(tmp_path / "f", n=1, defects=False)
    assert "nope.jsonl does not exist" in _refusal(SourceSpec(input=str(folder), captions_file="nope.jsonl"))


def test_csv_without_a_caption_column_is_refused_naming_its_columns(tmp_path):
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "captions.csv").write_text("file_name,label\na.png,cat\n")
    message = _refusal(SourceSpec(input=str(tmp_path / "f")))
    assert "file_name, label" in message and "caption, text" in message


# --- parquet --------------------------------------------------------------------------------------------------------

def test_parquet_with_defects_gives_the_exact_sample_stream(tmp_path):
    path, expected = make_parquet(tmp_path / "data.parquet", n=3, seed=3)
    source = open_source(SourceSpec(input=str(path)))
    assert isinstance(source, ParquetSource)
    assert _summary(source) == [
        ("data/0", "bytes", _caption(3, 0), None), ("data/1", None, _caption(3, 3), None),
        ("data/2", "bytes", _caption(3, 1), None), ("data/3", "bytes", _caption(3, 2), None),
        ("data/4", "bytes", None, None), ("data/5", "bytes", " ", None), ("data/6", "bytes", _caption(3, 6), None)]
    assert _samples(source)[6].image == GARBAGE
    assert expected["kept_keys"] == ["data/0", "data/2", "data/3"]


def test_parquet_row_groups_are_grouped_greedily_and_never_split(tmp_path):
    path, _ = make_parquet(tmp_path / "d.parquet", n=11, defects=False, row_group_size=3)  # groups of 3, 3, 3, 2
    layouts = {size: [(p.fingerprint["row_groups"], p.fingerprint["rows"]) for p in
                      open_source(SourceSpec(input=str(path), part_size=size)).parts()] for size in (2, 6, 7, 100)}
    assert layouts[2] == [([0], [0, 3]), ([1], [3, 6]), ([2], [6, 9]), ([3], [9, 11])]
    assert layouts[6] == layouts[7] == [([0, 1], [0, 6]), ([2, 3], [6, 11])]
    assert layouts[100] == [([0, 1, 2, 3], [0, 11])]


def test_parquet_hf_image_structs_are_read_from_bytes_or_from_their_path(tmp_path):
    path, _ = make_parquet(tmp_path / "d.parquet", n=3, seed=4, defects=False, hf_struct=True)
    images = [s.image for s in _samples(open_source(SourceSpec(input=str(path))))]
    assert images == [scene(4, i)[0] for i in range(3)]
    assert pq.read_table(path)["image"][0].as_py()["bytes"] is None  # the first one really came from its file


def test_parquet_image_column_marked_as_hf_image_feature_is_detected(tmp_path):
    table = pa.table({"picture": pa.array([{"bytes": b"img", "path": None}],
                                          pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                      "prompt": ["a cat"], "image_id": [7]})
    meta = {"huggingface": json.dumps({"info": {"features": {"picture": {"_type": "Image"}}}})}
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "d.parquet")
    source = open_source(SourceSpec(input=str(tmp_path / "d.parquet")))
    assert (source.columns.image, source.columns.caption) == ("picture", "prompt")
    assert _summary(source) == [("d/0", "bytes", "a cat", None)]


def test_parquet_key_column_names_samples_and_a_repeat_is_a_duplicate(tmp_path):
    pq.write_table(pa.table({"jpg": [b"a", b"b", None], "txt": ["x", "y", "z"], "key": [10, 11, 10]}),
                   tmp_path / "d.parquet")
    assert _summary(open_source(SourceSpec(input=str(tmp_path / "d.parquet")))) == [
        ("10", "bytes", "x", None), ("11", "bytes", "y", None), ("10", None, None, "duplicate_key")]


def test_parquet_token_lists_become_int64_arrays(tmp_path):
    pq.write_table(pa.table({"tokens": pa.array([[1, 2, 3], None, [4, 5, 6]], pa.list_(pa.int32())),
                             "caption": ["a", "b", "c"]}), tmp_path / "t.parquet")
    samples = _samples(open_source(SourceSpec(input=str(tmp_path / "t.parquet"), tokens=True)))
    assert [s.image.tolist() if s.image is not None else None for s in samples] == [[1, 2, 3], None, [4, 5, 6]]
    assert samples[0].image.dtype == np.int64


def test_parquet_folder_is_read_recursively_in_sorted_order(tmp_path):
    make_parquet(tmp_path / "p" / "b.parquet", n=2, defects=False)
    make_parquet(tmp_path / "p" / "a" / "z.parquet", n=1, defects=False)
    source = open_source(SourceSpec(input=str(tmp_path / "p")))
    assert [s.key for s in _samples(source)] == ["a/z/0", "b/0", "b/1"] and len(source.parts()) == 2


def test_parquet_without_the_needed_columns_is_refused_naming_what_exists(tmp_path):
    pq.write_table(pa.table({"photo": [b"x"], "words": ["y"]}), tmp_path / "d.parquet")
    message = _refusal(SourceSpec(input=str(tmp_path / "d.parquet")))
    assert "photo, words" in message and "--image-column" in message
    message = _refusal(SourceSpec(input=str(tmp_path / "d.parquet"), image_column="photo"))
    assert "photo, words" in message and "--caption-column" in message
    assert "'pic'" in _refusal(SourceSpec(input=str(tmp_path / "d.parquet"), image_column="pic"))


# --- saved Hugging Face datasets ------------------------------------------------------------------------------------

def test_saved_dataset_split_is_read_across_files_and_batches(tmp_path):
    root, expected = make_hf_dataset(tmp_path / "hf", n=5, seed=5, split="train")
    source = open_source(SourceSpec(input=str(root), part_size=2))
    assert isinstance(source, HFDiskSource) and source.split == "train"
    samples = _samples(source)
    assert [s.key for s in samples] == expected["kept_keys"] == [
        "data-00000-of-00002/0", "data-00000-of-00002/1", "data-00001-of-00002/0", "data-00001-of-00002/1",
        "data-00001-of-00002/2"]
    assert [(s.image, s.caption) for s in samples] == [scene(5, i) for i in range(5)]
    assert [p.locator[2:] for p in source.parts()] == [(0, 2), (0, 2), (2, 3)]
    other = _samples(open_source(SourceSpec(input=str(root), split="test")))
    assert [s.caption for s in other] == [_caption(6, 0), _caption(6, 1)]


def test_saved_dataset_without_splits_is_read_and_refuses_split(tmp_path):
    root, expected = make_hf_dataset(tmp_path / "hf", n=3, seed=7)
    assert [s.key for s in _samples(open_source(SourceSpec(input=str(root))))] == expected["kept_keys"]
    assert "drop --split" in _refusal(SourceSpec(input=str(root), split="train"))


def test_missing_split_is_refused_listing_the_splits(tmp_path):
    root, _ = make_hf_dataset(tmp_path / "hf", n=2, split="train")
    message = _refusal(SourceSpec(input=str(root), split="validation"))
    assert "no split 'validation'" in message and "train, test" in message


# --- npy ------------------------------------------------------------------------------------------------------------

def test_npy_rows_become_int64_copies_with_keys_and_captions(tmp_path):
    path, tokens, captions = make_token_npy(tmp_path / "tok.npy", n=4, grid=2, codebook=50, seed=8)
    source = open_source(SourceSpec(input=str(path), tokens=True, part_size=3))
    assert isinstance(source, NpySource)
    samples = _samples(source)
    assert [s.key for s in samples] == ["tok-000", "tok-001", "tok-002", "tok-003"]
    assert [s.caption for s in samples] == captions and captions[1].startswith("  ")
    assert all(s.image.dtype == np.int64 and s.image.shape == (4,) for s in samples)
    np.testing.assert_array_equal(np.stack([s.image for s in samples]), tokens.reshape(4, 4))
    mapped = np.load(path, mmap_mode="r")
    assert not any(np.shares_memory(s.image, mapped) for s in samples)


def test_npy_with_text_captions_uses_row_numbers_as_keys(tmp_path):
    np.save(tmp_path / "codes.npy", np.array([[1, 2], [3, 4], [5, 6]], dtype=np.int16))
    (tmp_path / "captions.txt").write_bytes("one\r\n\ntwo three\n".encode())
    rows = _summary(open_source(SourceSpec(input=str(tmp_path / "codes.npy"), tokens=True)))
    assert rows == [("000000000", "tokens", "one", None), ("000000001", "tokens", "", None),
                    ("000000002", "tokens", "two three", None)]


def test_npy_jsonl_bad_lines_and_repeated_keys_are_skipped_in_place(tmp_path):
    np.save(tmp_path / "t.npy", np.zeros((4, 3), dtype=np.int64))
    lines = ['{"caption": "a", "key": "k"}', "{broken", '{"caption": "b", "key": "k"}', '{"caption": "c"}']
    (tmp_path / "t.jsonl").write_text("\n".join(lines))
    assert _summary(open_source(SourceSpec(input=str(tmp_path / "t.npy"), tokens=True))) == [
        ("k", "tokens", "a", None), ("000000001", None, None, "unreadable_caption"),
        ("k", None, None, "duplicate_key"), ("000000003", "tokens", "c", None)]


def test_npy_row_count_mismatch_is_refused(tmp_path):
    np.save(tmp_path / "tokens.npy", np.zeros((100, 4), dtype=np.int32))
    (tmp_path / "captions.jsonl").write_text("".join(json.dumps({"caption": f"c{i}"}) + "\n" for i in range(99)))
    assert _refusal(SourceSpec(input=str(tmp_path / "tokens.npy"), tokens=True)) == (
        "tokens.npy has 100 rows but captions.jsonl has 99 lines; they must match row for row")


def test_npy_without_the_tokens_flag_is_refused(tmp_path):
    path, _, _ = make_token_npy(tmp_path / "tok.npy", n=2, grid=2)
    assert _refusal(SourceSpec(input=str(path))) == "a .npy input holds token ids; use --image-tokenizer pretokenized"


@pytest.mark.parametrize("array", [np.zeros((2, 3), dtype=np.float32), np.zeros(5, dtype=np.int64)])
def test_npy_of_floats_or_one_dimension_is_refused(tmp_path, array):
    np.save(tmp_path / "t.npy", array)
    (tmp_path / "t.txt").write_text("a\nb\n")
    assert "expected integer token ids" in _refusal(SourceSpec(input=str(tmp_path / "t.npy"), tokens=True))


# --- all formats ----------------------------------------------------------------------------------------------------

def _build(kind: str, root: Path) -> SourceSpec:
    """A spec for a small input of each format (part size filled in by the caller)."""
    if kind == "folder":
        return SourceSpec(input=str(make_image_folder(root / "f", n=5, seed=9)[0]))
    if kind == "parquet":
        return SourceSpec(input=str(make_parquet(root / "d.parquet", n=5, seed=9, row_group_size=1)[0]))
    if kind == "hf":
        return SourceSpec(input=str(make_hf_dataset(root / "hf", n=7, seed=9)[0]))
    return SourceSpec(input=str(make_token_npy(root / "t.npy", n=8, grid=2, seed=9)[0]), tokens=True)


def _comparable(samples) -> list[tuple]:
    return [(s.key, s.image.tolist() if isinstance(s.image, np.ndarray) else s.image, s.caption, s.skip)
            for s in samples]


@pytest.mark.parametrize("kind", ["folder", "parquet", "hf", "npy"])
def test_parts_of_three_cover_every_sample_once_in_order(tmp_path, kind):
    spec = _build(kind, tmp_path)
    whole = open_source(replace(spec, part_size=10**6))
    split = open_source(replace(spec, part_size=3))
    assert len(whole.parts()) == 1 or kind == "hf"  # a saved dataset has a part per file at least
    parts = split.parts()
    assert [p.index for p in parts] == list(range(len(parts)))
    sizes = [len(list(split.read(p))) for p in parts]
    assert all(size <= 3 for size in sizes) and len(parts) > 2
    assert _comparable(_samples(split)) == _comparable(_samples(whole))
    keys = [s.key for s in _samples(split) if not s.skip]
    assert len(keys) == len(set(keys))


@pytest.mark.parametrize("kind", ["folder", "parquet", "hf", "npy"])
def test_sources_pickle_and_read_the_same_after_unpickling(tmp_path, kind):
    source = open_source(replace(_build(kind, tmp_path), part_size=4))
    copy = pickle.loads(pickle.dumps(source))
    assert copy.describe() == source.describe() and copy.parts() == source.parts()
    assert _comparable(_samples(copy, copy.parts())) == _comparable(_samples(source))
    json.dumps(source.describe())
    json.dumps([p.fingerprint for p in source.parts()])


def test_non_ascii_captions_with_surrounding_spaces_are_delivered_unchanged(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"x")
    (folder / "captions.jsonl").write_text(json.dumps({"file_name": "a.png", "caption": SPACED}, ensure_ascii=False),
                                           encoding="utf-8")
    shutil.copytree(folder, tmp_path / "g", ignore=shutil.ignore_patterns("*.jsonl"))
    (tmp_path / "g" / "captions.csv").write_text(f'file_name,caption\na.png,"{SPACED}"\n', encoding="utf-8")
    pq.write_table(pa.table({"image": [b"x"], "caption": [SPACED]}), tmp_path / "d.parquet")
    np.save(tmp_path / "t.npy", np.zeros((1, 2), dtype=np.int64))
    (tmp_path / "t.txt").write_text(SPACED + "\n", encoding="utf-8")
    specs = [SourceSpec(input=str(folder)), SourceSpec(input=str(tmp_path / "g")),
             SourceSpec(input=str(tmp_path / "d.parquet")), SourceSpec(input=str(tmp_path / "t.npy"), tokens=True)]
    assert [[s.caption for s in _samples(open_source(spec))] for spec in specs] == [[SPACED]] * 4


def test_folder_fingerprint_changes_when_an_image_changes(tmp_path):
    folder, _ = make_image_folder(tmp_path / "f", n=2, defects=False)
    before = open_source(SourceSpec(input=str(folder))).parts()[0].fingerprint
    stat = os.stat(folder / "img-000.png")
    (folder / "img-000.png").write_bytes(b"changed")
    os.utime(folder / "img-000.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert open_source(SourceSpec(input=str(folder))).parts()[0].fingerprint != before
