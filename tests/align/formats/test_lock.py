"""One output folder, one writer: the fcntl lock refuses a second writer and survives its holder's death."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tokalign.align.errors import TokalignError
from tokalign.align.formats import outputs
from tokalign.align.formats.lock import exclusive_lock, writing_folder

_HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from tokalign.align.formats.lock import exclusive_lock
    with exclusive_lock(Path(sys.argv[1]), "test"):
        print("locked", flush=True)
        time.sleep(60)
""")


def _holder(folder):
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path):
    proc = _holder(tmp_path)
    try:
        with pytest.raises(TokalignError, match=rf"being written by another tokalign process \(pid {proc.pid}\)"):
            with exclusive_lock(tmp_path, "fit", "--run"):
                pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (tmp_path / outputs.LOCK).exists()  # left by the killed holder: stale, and taken over
    with exclusive_lock(tmp_path, "fit"):
        assert (tmp_path / outputs.LOCK).read_text().split()[0] == str(os.getpid())
    assert not (tmp_path / outputs.LOCK).exists()  # a clean exit leaves nothing


def test_the_same_process_cannot_take_the_lock_twice(tmp_path):
    with exclusive_lock(tmp_path, "fit"):
        with pytest.raises(TokalignError, match="another tokalign process"):
            with exclusive_lock(tmp_path, "fit"):
                pass


def test_writing_folder_removes_what_a_failed_call_created_and_stale_temps(tmp_path):
    target = tmp_path / "a" / "b"
    with pytest.raises(RuntimeError):
        with writing_folder(target, outputs.FIT_RUN, what="fit"):
            assert outputs.read_marker(target)["kind"] == outputs.FIT_RUN
            raise RuntimeError("refused before writing")
    assert not (tmp_path / "a").exists()
    target.mkdir(parents=True)
    (target / ".config.json.abcd_123.json.tmp").write_text("half")
    (target / ".step_4.x1y2z3w4.tmp").mkdir()
    with writing_folder(target, outputs.FIT_RUN, what="fit") as claim:
        assert claim.state == "empty"  # leftovers of a killed writer are not content
    assert sorted(p.name for p in target.iterdir()) == [outputs.MARKER]
