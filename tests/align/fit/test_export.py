"""``tokalign export --to generator-init``: what the file holds, the round trip, and every refusal."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from tokalign.align.errors import TokalignError
from tokalign.align.fit.export import EXPORT_TARGETS, ExportConfig, export_run
from tokalign.align.formats.generator_init import SPECIAL_TOKENS, read_generator_init
from tokalign.align.formats.hashing import tensors_sha256
from tokalign.align.fit.loop import fit
from tokalign.align.fit.config import FitConfig
from cli_run import refused, run_main
from tokalign.align.fit.table import load_table

FAST = dict(steps=6, batch_size=16, holdout=16, warmup_steps=2, log_every=3, checkpoint_every=100, progress=False, lr=1e-2)
CODEBOOK = 64




@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_lm, lm_cache, lm):
    from synthetic_corpus import write_synthetic_corpus

    root = tmp_path_factory.mktemp("export-run")
    corpus = write_synthetic_corpus(root / "corpus", lm, codebook=CODEBOOK)
    fit(FitConfig(corpus=corpus, run_dir=root / "run", lm=tiny_lm, cache_root=lm_cache, **FAST))
    return root / "run"


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "init.safetensors"
    export_run(ExportConfig(run=run, out=out))
    return out






def rewrite(src, dst, *, metadata=None, tensors=None):
    """Copy a generator-init file with some metadata or tensors replaced (checksums left as they were)."""
    with safe_open(str(src), framework="pt") as handle:
        meta = dict(handle.metadata())
        data = {k: handle.get_tensor(k) for k in handle.keys()}
    meta.update(metadata or {})
    data.update(tensors or {})
    save_file(data, str(dst), metadata=meta)
    return dst


# ------------------------------------------------------------------ what is written
def test_round_trip_layout_and_metadata(exported, run, lm):
    init = read_generator_init(exported, lm.embeddings, codebook_size=CODEBOOK, lm_identity=lm.identity,
                               lm_embedding_sha256=lm.embedding_sha256)
    meta, v = init.metadata, lm.vocab_size
    table, table_meta = load_table(run / "table.safetensors")
    assert init.image_rows.shape == (CODEBOOK, lm.d_model) and init.special_rows.shape == (7, lm.d_model)
    assert meta["format"] == "tokalign-generator-init" and meta["target"] == "generator-init"
    assert (meta["d_model"], meta["text_vocab_size"], meta["codebook_size"]) == (lm.d_model, v, CODEBOOK)
    assert init.image_offset == v and meta["special_offset"] == v + CODEBOOK and init.vocab_size == v + CODEBOOK + 7
    assert init.special_tokens == {name: v + CODEBOOK + i for i, name in enumerate(SPECIAL_TOKENS)}
    assert list(init.special_tokens) == list(SPECIAL_TOKENS)
    assert meta["lm_embedding_sha256"] == lm.embedding_sha256 and meta["lm"] == lm.identity
    assert meta["image_tokenizer"] == table_meta["image_tokenizer"]
    assert meta["source_run"] == str(run.resolve()) and meta["source_steps"] == "6"
    assert meta["source_table_sha256"] == tensors_sha256({"image_embeddings": table})
    full = init.full_embeddings(lm.embeddings)
    assert full.shape == (init.vocab_size, lm.d_model) and torch.equal(full[:v], lm.embeddings)
    assert torch.equal(full[init.special_tokens["<pad>"]], init.special_rows[-1])


def test_global_rescale_keeps_the_fit_and_matches_the_lm_mean_norm(exported, run, lm):
    init = read_generator_init(exported)
    table, _ = load_table(run / "table.safetensors")
    factor = init.metadata["rescale"]["factor"]
    assert init.metadata["rescale"]["method"] == "global" and factor > 0
    torch.testing.assert_close(init.image_rows, table * factor)  # one factor: the fitted loss is unchanged
    lm_norm = lm.embeddings.norm(dim=1).mean()
    torch.testing.assert_close(init.image_rows.norm(dim=1).mean(), lm_norm)


def test_special_rows_default_to_the_lm_mean_row(exported, lm):
    init = read_generator_init(exported)
    torch.testing.assert_close(init.special_rows, lm.embeddings.float().mean(dim=0).expand(7, -1))
    assert init.metadata["special_init"]["method"] == "lm-mean-row"


def test_gaussian_special_rows_are_distinct_seeded_and_at_the_lm_mean_norm(run, lm, tmp_path):
    first = export_run(ExportConfig(run=run, out=tmp_path / "first.safetensors", special="gaussian"))
    init = read_generator_init(first.out)
    assert init.metadata["special_init"]["method"] == "lm-diagonal-gaussian-at-mean-norm"
    norms = init.special_rows.norm(dim=1)
    torch.testing.assert_close(norms, torch.full((7,), float(lm.embeddings.norm(dim=1).mean())))
    cosines = torch.nn.functional.normalize(init.special_rows, dim=1) @ torch.nn.functional.normalize(init.special_rows, dim=1).T
    assert (cosines - torch.eye(7)).abs().max() < 0.99  # no two rows alike
    again = export_run(ExportConfig(run=run, out=tmp_path / "again.safetensors", special="gaussian"))
    other = export_run(ExportConfig(run=run, out=tmp_path / "other.safetensors", special="gaussian", seed=1))
    assert again.metadata["tensor_sha256"] == first.metadata["tensor_sha256"]
    assert other.metadata["tensor_sha256"] != first.metadata["tensor_sha256"]


def test_unknown_special_mode_is_refused(run, tmp_path):
    with pytest.raises(TokalignError, match="--special"):
        ExportConfig(run=run, out=tmp_path / "x.safetensors", special="zeros")


def test_per_row_rescale_gives_every_row_the_lm_mean_norm(run, lm, tmp_path):
    export_run(ExportConfig(run=run, out=tmp_path / "rows.safetensors", rescale="per-row"))
    init = read_generator_init(tmp_path / "rows.safetensors", lm.embeddings)
    table, _ = load_table(run / "table.safetensors")
    lm_norm = float(lm.embeddings.norm(dim=1).mean())
    torch.testing.assert_close(init.image_rows.norm(dim=1), torch.full((CODEBOOK,), lm_norm))
    torch.testing.assert_close(torch.nn.functional.normalize(init.image_rows, dim=1), torch.nn.functional.normalize(table, dim=1))


def test_cli_export_writes_the_file_and_describes_it(capsys, run, lm, tmp_path):
    out = tmp_path / "sub" / "init.safetensors"
    code, stdout, err = run_main(capsys, "export", "--run", run, "--to", "generator-init", "--out", out)
    assert code == 0, err
    assert stdout.splitlines()[0] == f"wrote {out} (generator-init)"
    v = lm.vocab_size
    assert f"image {v}..{v + CODEBOOK - 1}" in stdout and f"<doc>={v + CODEBOOK}" in stdout
    assert read_generator_init(out, lm.embeddings).metadata["codebook_size"] == CODEBOOK
    assert sorted(p.name for p in out.parent.iterdir()) == ["init.safetensors"]  # no temporary left


# ------------------------------------------------------------------ mismatches and damage
def test_another_lm_is_refused(exported, lm):
    other = lm.embeddings.clone()
    other[5, 0] += 1e-3
    with pytest.raises(TokalignError, match="another LM"):
        read_generator_init(exported, other)
    with pytest.raises(TokalignError, match="another LM"):
        read_generator_init(exported, lm_embedding_sha256="0" * 64)
    with pytest.raises(TokalignError, match="exported for LM"):
        read_generator_init(exported, lm_identity={**lm.identity, "name": "other-lm"})
    with pytest.raises(TokalignError, match="text vocabulary"):
        read_generator_init(exported, torch.cat([lm.embeddings, lm.embeddings[:1]]))
    read_generator_init(exported, lm_identity={**lm.identity, "spec": "another spelling"})  # spec is not identity


def test_another_d_model_is_refused(exported, lm):
    with pytest.raises(TokalignError, match="d_model"):
        read_generator_init(exported, torch.randn(lm.vocab_size, lm.d_model * 2))
    with pytest.raises(TokalignError, match="d_model"):
        read_generator_init(exported, d_model=lm.d_model + 1)


def test_another_codebook_is_refused(exported):
    with pytest.raises(TokalignError, match="64-code"):
        read_generator_init(exported, codebook_size=16384)


def test_damaged_files_are_refused(exported, tmp_path):
    flipped = tmp_path / "flipped.safetensors"
    data = bytearray(exported.read_bytes())
    data[-3] ^= 0x40
    flipped.write_bytes(bytes(data))
    with pytest.raises(TokalignError, match="tensor checksum"):
        read_generator_init(flipped)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(exported.read_bytes()[:-100])
    with pytest.raises(TokalignError, match="damaged"):
        read_generator_init(truncated)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(TokalignError, match="damaged"):
        read_generator_init(garbage)
    with pytest.raises(TokalignError, match="no generator-init file"):
        read_generator_init(tmp_path / "missing.safetensors")


def test_edited_files_are_refused(exported, tmp_path):
    edited = rewrite(exported, tmp_path / "edited.safetensors", metadata={"codebook_size": "65"})
    with pytest.raises(TokalignError, match="metadata checksum"):
        read_generator_init(edited)
    rows = rewrite(exported, tmp_path / "rows.safetensors", tensors={"special_rows": torch.zeros(7, 32)})
    with pytest.raises(TokalignError, match="tensor checksum"):
        read_generator_init(rows)
    shape = rewrite(exported, tmp_path / "shape.safetensors", tensors={"special_rows": torch.zeros(6, 32)})
    with pytest.raises(TokalignError, match="special_rows"):
        read_generator_init(shape)
    newer = rewrite(exported, tmp_path / "newer.safetensors", metadata={"version": "99"})
    with pytest.raises(TokalignError, match="version"):
        read_generator_init(newer)


def test_a_table_file_is_not_a_generator_init(run):
    with pytest.raises(TokalignError, match="not a generator-init file"):
        read_generator_init(run / "table.safetensors")


# ------------------------------------------------------------------ bad input to the CLI
def test_unknown_target_is_refused_and_writes_nothing(capsys, run, tmp_path):
    out = tmp_path / "x.safetensors"
    line = refused(capsys, "export", "--run", run, "--to", "gguf", "--out", out)
    assert "unknown export target 'gguf'" in line and "generator-init" in line
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert "generator-init" in EXPORT_TARGETS


def test_a_run_without_a_table_is_refused_and_an_old_file_survives(capsys, run, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(run, partial)
    (partial / "table.safetensors").unlink()
    out = tmp_path / "init.safetensors"
    out.write_bytes(b"previous")
    assert "no table" in refused(capsys, "export", "--run", partial, "--to", "generator-init", "--out", out)
    assert out.read_bytes() == b"previous" and not list(tmp_path.glob(".*.tmp"))


def test_damaged_run_embeddings_are_refused(capsys, run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    lm_json = json.loads((broken / "lm" / "lm.json").read_text())
    lm_json["embedding_sha256"] = "f" * 64
    (broken / "lm" / "lm.json").write_text(json.dumps(lm_json))
    line = refused(capsys, "export", "--run", broken, "--to", "generator-init", "--out", tmp_path / "o.safetensors")
    assert "sha256" in line and not (tmp_path / "o.safetensors").exists()


def test_out_is_a_folder_a_file_of_the_run_or_the_run_is_missing(capsys, run, tmp_path):
    assert "is a folder" in refused(capsys, "export", "--run", run, "--to", "generator-init", "--out", tmp_path)
    table = (run / "table.safetensors").read_bytes()
    line = refused(capsys, "export", "--run", run, "--to", "generator-init", "--out", run / "table.safetensors")
    assert "overwrite a file of the run" in line and (run / "table.safetensors").read_bytes() == table
    assert "does not exist" in refused(capsys, "export", "--run", tmp_path / "nope", "--to", "generator-init",
                                       "--out", tmp_path / "o.safetensors")
