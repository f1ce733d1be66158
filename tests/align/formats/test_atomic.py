"""Atomic writes leave the old file or the new one, never a part, with ordinary permissions."""

from __future__ import annotations

import os

import pytest

from tokalign.align.formats import atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    atomic.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text().strip().startswith("{") and '"a": 1' in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_a_failed_folder_build_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(tmp_path / "corpus") as tmp:
            (tmp / "part").write_text("x")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_written_files_and_folders_get_the_umask_permissions(tmp_path):
    atomic.write_text(tmp_path / "f.txt", "x")
    with atomic.atomic_dir(tmp_path / "d") as tmp:
        (tmp / "inner").write_text("y")
    assert os.stat(tmp_path / "f.txt").st_mode & 0o777 == atomic.FILE_MODE
    assert os.stat(tmp_path / "d").st_mode & 0o777 == atomic.DIR_MODE
