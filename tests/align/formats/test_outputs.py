"""The output rule (``outputs.py``): a folder is written only when it is new, empty or the command's own kind."""

from __future__ import annotations

import json
import os

import pytest

from tokalign.align.errors import TokalignError
from tokalign.align.formats import outputs


def _corpus_like(folder):
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"format": "tokalign-corpus", "version": 1}))
    return folder


def test_new_empty_and_own_folders_are_claimed(tmp_path):
    assert outputs.claim_output_dir(tmp_path / "new", outputs.REPORT).state == "new"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / outputs.LOCK).write_text("")  # bookkeeping does not make a folder non-empty
    assert outputs.claim_output_dir(tmp_path / "empty", outputs.REPORT).state == "empty"
    (tmp_path / "mine").mkdir()
    outputs.write_marker(tmp_path / "mine", outputs.DECODE)
    (tmp_path / "mine" / "000000.png").write_bytes(b"png")
    assert outputs.claim_output_dir(tmp_path / "mine", outputs.DECODE).state == "own"
    assert outputs.claim_output_dir(_corpus_like(tmp_path / "c"), outputs.CORPUS).state == "own"


def test_a_folder_of_user_files_or_of_another_kind_is_refused_in_one_line(tmp_path):
    user = tmp_path / "photos"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    with pytest.raises(TokalignError, match=r"not a tokalign report folder .*'notes.txt'.*choose another --out"):
        outputs.claim_output_dir(user, outputs.REPORT)
    with pytest.raises(TokalignError, match="is a tokalign corpus"):
        outputs.claim_output_dir(_corpus_like(tmp_path / "c"), outputs.REPORT)
    assert (user / "notes.txt").read_text() == "keep me"


def test_locations_no_option_lifts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TokalignError, match="current folder"):
        outputs.claim_output_dir(tmp_path / ".", outputs.REPORT)
    with pytest.raises(TokalignError, match="current folder or above"):
        outputs.claim_output_dir(tmp_path.parent, outputs.REPORT)
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(TokalignError, match="which this command reads and must keep"):
        outputs.claim_output_dir(run, outputs.REPORT, keep=(run,))
    assert outputs.claim_output_dir(run / "report", outputs.REPORT, keep=(run,)).state == "new"
    with pytest.raises(TokalignError, match="inside the input"):
        outputs.claim_output_dir(run / "x", outputs.CORPUS, inputs=(run,))
    with pytest.raises(TokalignError, match="contains the input"):
        outputs.check_location(tmp_path / "sub", inputs=(tmp_path / "sub" / "in",))
    (tmp_path / "file").write_text("x")
    with pytest.raises(TokalignError, match="lies below .*file, which is a file"):
        outputs.claim_output_dir(tmp_path / "file" / "run", outputs.FIT_RUN, option="--run")
    with pytest.raises(TokalignError, match="is a file, not a folder"):
        outputs.claim_output_dir(tmp_path / "file", outputs.FIT_RUN, option="--run")


def test_file_outputs_never_land_on_another_artifact(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step_4").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"trajectory": {}}))
    (run / "checkpoints" / "step_4" / "state.safetensors").write_bytes(b"x")
    table = run / "table.safetensors"
    header = json.dumps({"__metadata__": {"format": "tokalign-table"}}).encode()
    table.write_bytes(len(header).to_bytes(8, "little") + header)
    for target in (table, run / "config.json", run / "checkpoints" / "step_4" / "state.safetensors"):
        with pytest.raises(TokalignError, match="belongs to"):
            outputs.check_output_file(target, None, option="--show")
    with pytest.raises(TokalignError, match="is a folder"):
        outputs.check_output_file(run, None)
    (run / "red.png").write_bytes(b"old png")  # a file the command wrote before, beside the run's own
    assert outputs.check_output_file(run / "red.png", None) == run / "red.png"
    assert outputs.check_output_file(table, "tokalign-table") == table  # its own format is replaced


def test_marker_keeps_fields_of_its_kind_and_is_rewritten_only_on_change(tmp_path):
    outputs.write_marker(tmp_path, outputs.CORPUS, tokenize={"a": 1})
    stamp = os.stat(tmp_path / outputs.MARKER).st_mtime_ns
    outputs.write_marker(tmp_path, outputs.CORPUS)
    assert outputs.read_marker(tmp_path)["tokenize"] == {"a": 1}
    assert os.stat(tmp_path / outputs.MARKER).st_mtime_ns == stamp
    assert outputs.folder_kind(tmp_path) == outputs.CORPUS
