"""Run the real ``tokalign`` entry point in-process and check the bad-input policy."""

from __future__ import annotations

from tokalign.cli.main import main


def run_main(capsys, *args) -> tuple[int, str, str]:
    """Run ``main``; return (exit code, stdout, stderr)."""
    capsys.readouterr()
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *args) -> str:
    """Exit 2, exactly one ``error:`` line on stderr, no traceback, nothing on stdout; return the line."""
    code, out, err = run_main(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("tokalign:")]
    assert "Traceback" not in err + out and out == ""
    assert code == 2, f"exit {code}, stderr: {err!r}"
    assert len(lines) == 1, f"expected one error line, got: {lines!r}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]
