"""Builders of small image-caption inputs in the folder, parquet, saved-dataset and npy formats, for tests.

Images are 256 x 256 shape scenes (``tokalign.align.sources.shapes``) with their real
captions, encoded as PNG or JPEG with PIL.  Each builder returns what the
full ``tokalign tokenize`` pipeline must make of its input, as ``expected``::

    {"kept": int, "skipped": {reason: count}, "adjusted": {reason: count}, "kept_keys": [key, ...]}

(counts of zero are left out, as in a corpus manifest; ``kept_keys`` in corpus
order).  The defects are chosen so that each hits exactly one skip reason,
given the pipeline's check order in ``samples.py``: source skip, no_image,
no_caption, empty_caption, then image decoding.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from tokalign.align.sources.shapes import make_scene, render

GARBAGE = b"this is not an image, just some bytes"


def scene(seed: int, index: int, fmt: str = "PNG", mode: str = "RGB") -> tuple[bytes, str]:
    """Encoded image bytes and the caption of shape scene ``index`` of ``seed``."""
    item = make_scene(seed, index)
    buffer = io.BytesIO()
    Image.fromarray(render(item)[0]).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue(), item.caption


def _expected(kept_keys: list[str], skipped: dict[str, int], adjusted: dict[str, int]) -> dict:
    return {"kept": len(kept_keys), "skipped": {k: v for k, v in skipped.items() if v},
            "adjusted": {k: v for k, v in adjusted.items() if v}, "kept_keys": list(kept_keys)}


def make_image_folder(root: Path, n: int = 8, *, seed: int = 0, defects: bool = True,
                      captions: str = "jsonl") -> tuple[Path, dict]:
    """A folder of ``n`` captioned images (even ones ``img-000.png`` at the top, odd ones ``sub/img-001.jpg``).

    With ``defects``, image 0 is grayscale (kept, adjusted ``grayscale``) and
    the captions file (``captions.jsonl`` or ``captions.csv``) also has: a row
    for ``missing.png`` that has no file (``no_image``), ``nocaption.png``
    without a row (``no_caption``), ``empty.png`` with a blank caption
    (``empty_caption``), ``garbage.jpg`` that is not an image
    (``unreadable_image``), a broken row (bad JSON, or a CSV row without its
    caption cell: ``unreadable_caption``) and a second row for ``img-000.png``
    (``duplicate_key``).
    """
    assert captions in ("jsonl", "csv") and n >= 1
    root = Path(root)
    (root / "sub").mkdir(parents=True, exist_ok=True)
    regular: list[tuple[str, str]] = []  # (file name, caption)
    for i in range(n):
        name = f"img-{i:03d}.png" if i % 2 == 0 else f"sub/img-{i:03d}.jpg"
        mode = "L" if defects and i == 0 else "RGB"
        data, caption = scene(seed, i, "PNG" if i % 2 == 0 else "JPEG", mode)
        (root / name).write_bytes(data)
        regular.append((name, caption))
    rows: list[tuple[str, str] | None] = list(regular)  # None is the broken row
    if defects:
        (root / "nocaption.png").write_bytes(scene(seed, n)[0])
        (root / "empty.png").write_bytes(scene(seed, n + 1)[0])
        (root / "garbage.jpg").write_bytes(GARBAGE)
        rows[1:1] = [("missing.png", scene(seed, n + 2)[1]), None, ("empty.png", "  "),
                     ("garbage.jpg", scene(seed, n + 3)[1]), ("img-000.png", "a second caption for the first image")]
    writer = _write_jsonl if captions == "jsonl" else _write_csv
    writer(root / f"captions.{captions}", rows)
    skipped = dict.fromkeys(("no_image", "no_caption", "empty_caption", "unreadable_image", "unreadable_caption",
                             "duplicate_key"), int(defects))
    kept = sorted(name for name, _ in regular)
    return root, _expected(kept, skipped, {"grayscale": int(defects)})


def _write_jsonl(path: Path, rows: list[tuple[str, str] | None]) -> None:
    lines = [json.dumps({"file_name": r[0], "caption": r[1]}, ensure_ascii=False) if r else '{"file_name": "broken.png",'
             for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_csv(path: Path, rows: list[tuple[str, str] | None]) -> None:
    import csv

    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "caption"])
        for row in rows:
            writer.writerow(row if row else ["broken.png"])


def make_parquet(path: Path, n: int = 8, *, seed: int = 0, defects: bool = True, hf_struct: bool = False,
                 row_group_size: int = 3) -> tuple[Path, dict]:
    """A parquet file of ``n`` (image, caption) rows, row groups of ``row_group_size``, keys ``{stem}/{row}``.

    With ``defects``, four more rows are mixed in: a null image
    (``no_image``), a null caption (``no_caption``), a blank caption
    (``empty_caption``) and garbage image bytes (``unreadable_image``).  With
    ``hf_struct`` the image column holds Hugging Face Image structs ``{bytes,
    path}`` (with the ``huggingface`` schema metadata), and the first image's
    struct has no bytes but a ``path`` to a file beside the parquet (kept).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images: list[bytes | None] = []
    captions: list[str | None] = []
    for i in range(n):
        data, caption = scene(seed, i)
        images.append(data)
        captions.append(caption)
    regular = [True] * n
    if defects:
        bad = [(None, scene(seed, n)[1]), (scene(seed, n + 1)[0], None), (scene(seed, n + 2)[0], " "),
               (GARBAGE, scene(seed, n + 3)[1])]
        for j, (image, caption) in enumerate(bad):
            at = min(1 + 3 * j, len(images))
            images.insert(at, image)
            captions.insert(at, caption)
            regular.insert(at, False)
    column = _hf_images(images, path) if hf_struct else pa.array(images, pa.binary())
    table = pa.table({"image": column, "caption": pa.array(captions, pa.string())})
    if hf_struct:
        table = table.replace_schema_metadata(_hf_metadata({"image": {"_type": "Image"}, "caption": _TEXT}))
    pq.write_table(table, path, row_group_size=row_group_size)
    kept = [f"{path.stem}/{row}" for row, ok in enumerate(regular) if ok]
    skipped = dict.fromkeys(("no_image", "no_caption", "empty_caption", "unreadable_image"), int(defects))
    return path, _expected(kept, skipped, {})


_TEXT = {"dtype": "string", "_type": "Value"}
_IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _hf_images(images: list[bytes | None], path: Path) -> pa.Array:
    """Image structs; the first image is stored as a file beside ``path`` and referenced by a relative path."""
    side = f"{path.stem}-files/first.png"
    (path.parent / side).parent.mkdir(parents=True, exist_ok=True)
    (path.parent / side).write_bytes(images[0])
    structs = [None if b is None else {"bytes": b, "path": f"{i}.png"} for i, b in enumerate(images)]
    structs[0] = {"bytes": None, "path": side}
    return pa.array(structs, _IMAGE_STRUCT)


def _hf_metadata(features: dict) -> dict:
    return {"huggingface": json.dumps({"info": {"features": features}})}


def make_hf_dataset(root: Path, n: int = 8, *, seed: int = 0, split: str | None = None) -> tuple[Path, dict]:
    """A dataset as ``datasets.Dataset.save_to_disk`` writes it, built with pyarrow alone; all ``n`` rows usable.

    Columns ``image`` (Image structs ``{bytes, path}``) and ``text``; the rows
    are spread over two Arrow stream files (one when ``n`` < 4) of two-row
    record batches.  With ``split``, ``root`` is a ``DatasetDict`` holding that
    split and a two-row ``test`` (or ``validation``) split.  Keys are
    ``data-0000F-of-0000K/{row}``.
    """
    root = Path(root)
    if split is None:
        return root, _expected(_write_saved(root, n, seed), {}, {})
    other = "validation" if split == "test" else "test"
    kept = _write_saved(root / split, n, seed)
    _write_saved(root / other, 2, seed + 1)
    (root / "dataset_dict.json").write_text(json.dumps({"splits": [split, other]}))
    return root, _expected(kept, {}, {})


def _write_saved(folder: Path, n: int, seed: int) -> list[str]:
    """One saved dataset of ``n`` rows in ``folder``; returns its keys in order."""
    folder.mkdir(parents=True, exist_ok=True)
    features = {"image": {"decode": True, "id": None, "_type": "Image"}, "text": _TEXT}
    schema = pa.schema([("image", _IMAGE_STRUCT), ("text", pa.string())], metadata=_hf_metadata(features))
    files = 2 if n >= 4 else 1
    bounds = np.linspace(0, n, files + 1).astype(int)
    names, keys = [], []
    for f in range(files):
        name = f"data-{f:05d}-of-{files:05d}.arrow"
        rows = range(bounds[f], bounds[f + 1])
        items = [scene(seed, i) for i in rows]
        table = pa.table({"image": pa.array([{"bytes": b, "path": None} for b, _ in items], _IMAGE_STRUCT),
                          "text": pa.array([c for _, c in items], pa.string())}, schema=schema)
        with pa.OSFile(str(folder / name), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            for batch in table.to_batches(max_chunksize=2):
                writer.write_batch(batch)
        names.append(name)
        keys += [f"{Path(name).stem}/{row}" for row in range(len(rows))]
    state = {"_data_files": [{"filename": name} for name in names], "_fingerprint": "0" * 16,
             "_format_columns": None, "_format_kwargs": {}, "_format_type": None, "_output_all_columns": False,
             "_split": None}
    (folder / "state.json").write_text(json.dumps(state, indent=2))
    (folder / "dataset_info.json").write_text(json.dumps({"citation": "", "description": "", "features": features}))
    return keys


def make_token_npy(path: Path, n: int = 10, *, grid: int = 32, codebook: int = 16384,
                   seed: int = 0) -> tuple[Path, np.ndarray, list[str]]:
    """An (n, grid, grid) int32 ``.npy`` of random token ids and ``<stem>.jsonl`` captions (keys ``tok-000``...).

    Caption 1 has surrounding spaces (the pipeline strips them).  Returns the
    array's path, the array and the captions as written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens = np.random.default_rng(seed).integers(0, codebook, size=(n, grid, grid)).astype(np.int32)
    np.save(path, tokens)
    captions = [make_scene(seed, i).caption for i in range(n)]
    if n > 1:
        captions[1] = f"  {captions[1]} "
    lines = [json.dumps({"caption": c, "key": f"tok-{i:03d}"}) for i, c in enumerate(captions)]
    path.with_suffix(".jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, tokens, captions
