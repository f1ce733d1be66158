"""``tokalign neighbors``: exact FAISS search equals brute force; the CLI in both directions; bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from tokalign.align.errors import TokalignError
from tokalign.align.fit.loop import fit
from tokalign.align.fit.config import FitConfig
from tokalign.probes.neighbors import NeighborsQuery, exact_ip_search, find_neighbors
from cli_run import refused, run_main
from tokalign.probes.token_text import BYTE_LEVEL, METASPACE, PLAIN, detect_mode, display_token, visible

FAST = dict(steps=6, batch_size=16, holdout=16, warmup_steps=2, log_every=3, checkpoint_every=100, progress=False, lr=1e-2)


# ------------------------------------------------------------------ fixtures and helpers


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_lm, lm_cache, lm):
    """A tiny finished run on a synthetic corpus (64 codes, no image tokenizer file)."""
    from synthetic_corpus import write_synthetic_corpus

    root = tmp_path_factory.mktemp("nb-run")
    corpus = write_synthetic_corpus(root / "corpus", lm)
    fit(FitConfig(corpus=corpus, run_dir=root / "run", lm=tiny_lm, cache_root=lm_cache, **FAST))
    return root / "run"


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory, shapes_corpus, tiny_lm, lm_cache):
    """A tiny finished run on the shapes corpus, whose k-means tokenizer can render tokens."""
    out = tmp_path_factory.mktemp("nb-shapes") / "run"
    fit(FitConfig(corpus=shapes_corpus, run_dir=out, lm=tiny_lm, cache_root=lm_cache, **{**FAST, "batch_size": 64}))
    return out






def brute_force(query: torch.Tensor, database: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = torch.nn.functional.normalize(database, dim=1) @ torch.nn.functional.normalize(query, dim=0)
    top = torch.topk(scores, k)
    return top.values.numpy(), top.indices.numpy()


def table_of(run_dir) -> torch.Tensor:
    from tokalign.align.fit.table import load_table

    return load_table(run_dir / "table.safetensors")[0]


# ------------------------------------------------------------------ search
def test_faiss_search_equals_torch_topk():
    generator = torch.Generator().manual_seed(0)
    database = torch.randn(700, 24, generator=generator) * torch.rand(700, 1, generator=generator) * 5
    database[13] = 0  # a zero row: cosine 0 with everything, no NaN
    queries = torch.randn(9, 24, generator=generator)
    scores, ids, device = exact_ip_search(queries.numpy(), database.numpy(), 25)
    assert device == "cpu" and scores.shape == ids.shape == (9, 25)
    for q in range(9):
        want_scores, want_ids = brute_force(queries[q], database, 25)
        np.testing.assert_array_equal(ids[q], want_ids)
        np.testing.assert_allclose(scores[q], want_scores, rtol=0, atol=1e-5)


def test_a_gpu_index_is_used_only_when_faiss_sees_a_gpu(monkeypatch):
    import faiss

    moved = []
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda index: moved.append(index) or index)
    database = np.random.default_rng(0).normal(size=(50, 8)).astype(np.float32)
    scores, ids, device = exact_ip_search(database[:2], database, 3)
    assert device == "gpu" and len(moved) == 1 and ids[:, 0].tolist() == [0, 1]
    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 0)
    assert exact_ip_search(database[:2], database, 3)[2] == "cpu" and len(moved) == 1


def test_a_query_imports_neither_torch_nor_transformers(run):
    """What keeps a cold ``tokalign neighbors`` call short: the probe itself needs neither."""
    import subprocess
    import sys

    code = ("import sys; from tokalign.probes.neighbors import NeighborsQuery, find_neighbors; "
            f"find_neighbors(NeighborsQuery(run={str(run)!r}, image_token=1)); "
            f"find_neighbors(NeighborsQuery(run={str(run)!r}, text_token='red')); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_image_to_text_equals_brute_force_on_a_run(run, lm):
    result = find_neighbors(NeighborsQuery(run=run, image_token=5, k=12))
    want_scores, want_ids = brute_force(table_of(run)[5], lm.embeddings, 12)
    assert [n.token.id for n in result.neighbors] == want_ids.tolist()
    np.testing.assert_allclose([n.score for n in result.neighbors], want_scores, atol=1e-5)
    assert [n.rank for n in result.neighbors] == list(range(1, 13)) and result.searched == lm.vocab_size
    first = result.neighbors[0].token
    assert first.token == lm.tokenizer.convert_ids_to_tokens(first.id)


def test_text_to_image_equals_brute_force_and_text_resolves_to_the_same_id(run, lm):
    red = lm.tokenizer.convert_tokens_to_ids("red")
    by_text = find_neighbors(NeighborsQuery(run=run, text_token=" red", k=8))
    by_id = find_neighbors(NeighborsQuery(run=run, text_id=red, k=8))
    want_scores, want_ids = brute_force(lm.embeddings[red], table_of(run), 8)
    assert by_text.query.id == by_id.query.id == red and by_text.query.display == "red"
    assert [n.token.id for n in by_text.neighbors] == [n.token.id for n in by_id.neighbors] == want_ids.tolist()
    np.testing.assert_allclose([n.score for n in by_text.neighbors], want_scores, atol=1e-5)


# ------------------------------------------------------------------ the CLI
def test_cli_image_to_text_prints_a_readable_table(capsys, run, lm):
    code, out, err = run_main(capsys, "neighbors", "--run", run, "--image-token", 3, "-k", 4)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("image token 3 -> 4 nearest of") and len(lines) == 2 + 4
    ranks = [line.split() for line in lines[2:]]
    assert [r[0] for r in ranks] == ["1", "2", "3", "4"]
    for rank in ranks:
        token_id, score, shown = int(rank[1]), float(rank[2]), " ".join(rank[3:])
        assert -1.0 <= score <= 1.0
        expected = lm.tokenizer.convert_ids_to_tokens(token_id)
        assert shown == (f"[special] {expected}" if token_id in lm.tokenizer.all_special_ids else expected)


def test_cli_text_to_image_json(capsys, run, lm):
    code, out, err = run_main(capsys, "neighbors", "--run", run, "--text-token", "circle", "-k", 5, "--json")
    assert code == 0, err
    data = json.loads(out)
    circle = lm.tokenizer.convert_tokens_to_ids("circle")
    assert data["direction"] == "text->image" and data["k"] == 5 and data["searched"] == 64
    assert data["query"] == {"kind": "text_token", "id": circle, "token": "circle", "display": "circle", "special": False}
    expected = find_neighbors(NeighborsQuery(run=run, text_id=circle, k=5))
    assert [r["id"] for r in data["neighbors"]] == [n.token.id for n in expected.neighbors]
    assert [r["rank"] for r in data["neighbors"]] == [1, 2, 3, 4, 5]
    assert all(r["kind"] == "image_token" for r in data["neighbors"])


def test_cli_image_to_text_json_marks_special_tokens(capsys, run, lm):
    code, out, _ = run_main(capsys, "neighbors", "--run", run, "--image-token", 0, "-k", lm.vocab_size, "--json")
    assert code == 0
    data = json.loads(out)
    assert sorted(r["id"] for r in data["neighbors"]) == list(range(lm.vocab_size))  # every text token, once
    specials = {r["token"]: r["display"] for r in data["neighbors"] if r["special"]}
    assert specials["[BOS]"] == "[special] [BOS]" and len(specials) == 4
    scores = [r["score"] for r in data["neighbors"]]
    assert scores == sorted(scores, reverse=True)


def test_cli_show_renders_the_neighbour_patches(capsys, shapes_run, tmp_path):
    from PIL import Image

    png = tmp_path / "out" / "red.png"
    code, out, err = run_main(capsys, "neighbors", "--run", shapes_run, "--text-token", "red", "-k", 12, "--show", png)
    assert code == 0, err
    assert out.splitlines()[-1] == f"patches: {png}"
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1] > 64  # two rows of up to 10 tiles
    assert sorted(p.name for p in png.parent.iterdir()) == ["red.png"]


def test_show_in_the_image_to_text_direction_renders_the_queried_token(shapes_run, tmp_path):
    from tokalign.probes.neighbors import token_patches
    from tokalign.probes.run_artifacts import open_run

    result = find_neighbors(NeighborsQuery(run=shapes_run, image_token=7, k=3, show=tmp_path / "t.png"))
    assert result.show == tmp_path / "t.png" and (tmp_path / "t.png").is_file()
    tokenizer = open_run(shapes_run).image_tokenizer()
    patches = token_patches(tokenizer, [7, 200, 7])
    assert patches.shape == (3, 8, 8, 3) and np.array_equal(patches[0], patches[2])
    np.testing.assert_array_equal(patches[1], np.clip(np.rint(tokenizer.codebook[200]), 0, 255).reshape(8, 8, 3))


# ------------------------------------------------------------------ bad input
def test_a_run_without_a_table_is_refused(capsys, run, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(run, partial)
    (partial / "table.safetensors").unlink()
    line = refused(capsys, "neighbors", "--run", partial, "--image-token", 1)
    assert "no table" in line and "tokalign fit" in line


def test_image_token_outside_the_codebook_is_refused(capsys, run):
    assert "outside the codebook" in refused(capsys, "neighbors", "--run", run, "--image-token", 64)
    assert "outside the codebook" in refused(capsys, "neighbors", "--run", run, "--image-token", -1)


def test_a_text_that_is_several_tokens_is_refused_naming_them(capsys, run, lm):
    line = refused(capsys, "neighbors", "--run", run, "--text-token", "red circle")
    red, circle = lm.tokenizer.convert_tokens_to_ids(["red", "circle"])
    assert "2 tokens" in line and f"{red} red" in line and f"{circle} circle" in line


def test_unknown_words_empty_text_and_bad_ids_are_refused(capsys, run, lm):
    assert "not in the LM's vocabulary" in refused(capsys, "neighbors", "--run", run, "--text-token", "zebra")
    assert "no token" in refused(capsys, "neighbors", "--run", run, "--text-token", " ")
    assert "outside the LM's vocabulary" in refused(capsys, "neighbors", "--run", run, "--text-id", lm.vocab_size)


def test_k_larger_than_the_vocabulary_is_refused(capsys, run, lm):
    line = refused(capsys, "neighbors", "--run", run, "--image-token", 1, "-k", lm.vocab_size + 1)
    assert f"-k {lm.vocab_size + 1}" in line and str(lm.vocab_size) in line
    assert "64 image tokens" in refused(capsys, "neighbors", "--run", run, "--text-id", 5, "-k", 65)
    assert "at least 1" in refused(capsys, "neighbors", "--run", run, "--text-id", 5, "-k", 0)


def test_the_query_must_name_exactly_one_token(capsys, run):
    assert "exactly one" in refused(capsys, "neighbors", "--run", run)
    assert "exactly one" in refused(capsys, "neighbors", "--run", run, "--image-token", 1, "--text-id", 2)


def test_show_without_a_renderable_tokenizer_writes_nothing(capsys, run, shapes_run, tmp_path):
    png = tmp_path / "x.png"
    assert "'synthetic'" in refused(capsys, "neighbors", "--run", run, "--image-token", 1, "--show", png)
    moved = tmp_path / "moved"
    shutil.copytree(shapes_run, moved)
    config = json.loads((moved / "config.json").read_text())
    config["corpus"]["path"] = str(tmp_path / "gone")
    (moved / "config.json").write_text(json.dumps(config))
    line = refused(capsys, "neighbors", "--run", moved, "--image-token", 1, "--show", png)
    assert "missing" in line and "corpus" in line
    assert not png.exists() and not list(tmp_path.glob(".*.tmp"))
    # without --show, the moved corpus does not matter
    assert run_main(capsys, "neighbors", "--run", moved, "--image-token", 1)[0] == 0


def test_library_errors_are_single_lines(run):
    with pytest.raises(TokalignError) as info:
        find_neighbors(NeighborsQuery(run=run / "nope", image_token=1))
    assert "\n" not in str(info.value) and "does not exist" in str(info.value)


# ------------------------------------------------------------------ token display
def test_byte_level_pieces_are_shown_readably():
    assert display_token("Ġred", BYTE_LEVEL) == "␣red"
    assert display_token("Ċ", BYTE_LEVEL) == "\\n" and display_token("ĉ", BYTE_LEVEL) == "\\t"
    assert display_token("ĠĠ", BYTE_LEVEL) == "␣␣"
    assert display_token("Ã©", BYTE_LEVEL) == "é"
    assert display_token("æĹ", BYTE_LEVEL) == "\\xe6\\x97"  # half of a multi-byte character
    assert display_token("<|im_start|>", BYTE_LEVEL, special=True) == "[special] <|im_start|>"
    assert display_token(None, BYTE_LEVEL) == "[no token]"


def test_metaspace_and_plain_pieces_are_shown_readably():
    assert display_token("▁red", METASPACE) == "␣red"
    assert display_token("<0x0A>", METASPACE) == "\\n"
    assert display_token("<0xE6>", METASPACE) == "\\xe6"
    assert display_token("a\\b", PLAIN) == "a\\\\b"
    assert visible("x\u200by\x7f") == "x\\u200by\\x7f"


def test_the_mode_is_read_from_tokenizer_json():
    assert detect_mode({"decoder": {"type": "ByteLevel"}}) == BYTE_LEVEL
    sentencepiece = {"decoder": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "}, {"type": "ByteFallback"}]}}
    assert detect_mode(sentencepiece) == METASPACE
    assert detect_mode({"pre_tokenizer": {"type": "Whitespace"}, "decoder": None}) == PLAIN
