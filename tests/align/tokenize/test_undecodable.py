"""One undecodable item never stops a run: non-UTF-8 names (folder, tar), lone-surrogate captions, outside links."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from tokalign.align.formats.corpus import open_corpus
from tokalign.align.sources.keys import escape_key, unescape_key
from tokalign.align.sources.spec import SourceSpec
from tokalign.align.tokenize.config import TokenizeConfig
from tokalign.align.tokenize.pipeline import tokenize_corpus


@pytest.fixture(scope="module")
def codebook(tmp_path_factory) -> Path:
    from tokalign.align.image_tokenizers.kmeans import PatchKMeansTokenizer
    from tokalign.align.sources.shapes import make_scene, render

    images = np.stack([render(make_scene(99, i))[0] for i in range(4)])
    path = tmp_path_factory.mktemp("codebook") / "kmeans.safetensors"
    PatchKMeansTokenizer.fit(images, codebook_size=16, iterations=2, seed=0).save(path)
    return path


def _tokenize(tiny_lm, lm_cache, codebook, input_, out, **kw):
    return tokenize_corpus(TokenizeConfig(source=SourceSpec(input=str(input_)), out=out, lm=tiny_lm,
                                          cache_root=lm_cache, image_tokenizer="kmeans",
                                          image_tokenizer_path=str(codebook), workers=0, progress=False, **kw))


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_escaped_keys_are_utf8_and_reversible():
    for name in ("plain.png", "caf\udce9.png", "back\\slash\udcff", "lone \ud800"):
        key = escape_key(name)
        key.encode("utf-8")
        assert unescape_key(key) == name if key != name else key == name
    assert os.fsencode(unescape_key(escape_key(os.fsdecode(b"caf\xe9.png")))) == b"caf\xe9.png"


def test_folder_with_latin1_names_and_a_surrogate_caption_is_tokenized_and_resumable(tiny_lm, lm_cache, codebook,
                                                                                     tmp_path):
    from file_fixtures import scene

    root = tmp_path / "photos"
    root.mkdir()
    for index, name in enumerate((b"plain.png", b"caf\xe9.png", b"na\xefve.png", b"bad-caption.png")):
        with open(os.path.join(os.fsencode(root), name), "wb") as handle:
            handle.write(scene(0, index)[0])
    rows = [{"file_name": "plain.png", "caption": "a red circle"},
            {"file_name": os.fsdecode(b"caf\xe9.png"), "caption": "a blue square"},  # JSON escape "\udce9"
            {"file_name": "bad-caption.png", "caption": "scraped \ud800 text"}]
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "corpus"
    result = _tokenize(tiny_lm, lm_cache, codebook, root, out)
    assert result.complete
    manifest = open_corpus(out).manifest
    assert manifest["items"] == 2
    assert manifest["skipped"] == {"no_caption": 1, "unreadable_caption": 1}
    assert manifest["adjusted"] == {"escaped_key": 1}
    keys = [r["key"] for r in open_corpus(out).records(range(2))]
    assert keys == ["caf\\xe9.png", "plain.png"]
    skipped = {r["reason"]: r["key"] for r in _lines(out / "skipped.jsonl")}
    assert skipped == {"no_caption": "na\\xefve.png", "unreadable_caption": "bad-caption.png"}
    assert _lines(out / "adjusted.jsonl") == [{"key": "caf\\xe9.png", "part": "photos/[0:4]", "reasons": ["escaped_key"]}]
    again = _tokenize(tiny_lm, lm_cache, codebook, root, out, resume=True)
    assert again.complete and again.parts_done == 0


def test_tar_with_latin1_member_names_and_a_surrogate_json_caption(tiny_lm, lm_cache, codebook, tmp_path):
    from file_fixtures import scene

    path = tmp_path / "shard.tar"
    members = [("caf\xe9.png", scene(0, 0)[0]), ("caf\xe9.txt", b"a red circle"),
               ("ok.png", scene(0, 1)[0]), ("ok.json", b'{"caption": "bad \\ud800 caption"}')]
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "corpus"
    assert _tokenize(tiny_lm, lm_cache, codebook, path, out).complete
    manifest = open_corpus(out).manifest
    assert manifest["items"] == 1 and manifest["skipped"] == {"unreadable_caption": 1}
    assert open_corpus(out).records([0])[0]["key"] == "caf\\xe9"
    assert _tokenize(tiny_lm, lm_cache, codebook, path, out, resume=True).parts_done == 0


def test_a_link_out_of_the_folder_is_followed_and_listed(tiny_lm, lm_cache, codebook, tmp_path):
    from file_fixtures import scene

    root, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (elsewhere / "x.png").write_bytes(scene(0, 0)[0])
    (root / "link.png").symlink_to(elsewhere / "x.png")
    (root / "here.png").write_bytes(scene(0, 1)[0])
    rows = [{"file_name": "link.png", "caption": "a red circle"}, {"file_name": "here.png", "caption": "a blue square"}]
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "corpus"
    _tokenize(tiny_lm, lm_cache, codebook, root, out)
    manifest = open_corpus(out).manifest
    assert manifest["items"] == 2 and manifest["adjusted"] == {"symlink_outside": 1}
    assert [r["key"] for r in _lines(out / "adjusted.jsonl")] == ["link.png"]
