"""The package layout keeps its promises: the import graph is a DAG, start-up stays torch-free, files stay short."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("align", "generate", "probes", "cli")
MAX_LINES = 500


def _modules(package: str) -> list[Path]:
    return sorted(p for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def _imported(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports (at any depth: lazy imports count too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    bad = []
    for path in _modules(package):
        for name in _imported(path):
            if any(name == f"tokalign.{f}" or name.startswith(f"tokalign.{f}.") for f in forbidden):
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    return bad


def test_align_imports_none_of_the_stages_above_it():
    assert _offenders("align", ("generate", "probes", "cli")) == []


def test_probes_and_generate_do_not_import_each_other():
    assert _offenders("probes", ("generate", "cli")) == []
    assert _offenders("generate", ("probes", "cli")) == []


def test_no_relative_imports_in_the_packages():
    relative = [str(p.relative_to(ROOT)) for package in PACKAGES for p in _modules(package)
                if any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(ast.parse(p.read_text())))]
    assert relative == []


def test_no_source_file_passes_the_line_limit():
    long = {str(p.relative_to(ROOT)): n for package in PACKAGES for p in _modules(package)
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def test_every_subpackage_states_what_lives_there():
    missing = []
    for package in PACKAGES:
        for init in (ROOT / package).rglob("__init__.py"):
            tree = ast.parse(init.read_text(encoding="utf-8"))
            if init.parent != ROOT / package and not ast.get_docstring(tree):
                missing.append(str(init.relative_to(ROOT)))
    assert missing == []


def _heavy_after(code: str) -> list[str]:
    probe = f"import sys\n{code}\nprint(','.join(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_cli_start_up_and_help_do_not_import_torch():
    assert _heavy_after("import tokalign.cli.main") == []
    assert _heavy_after("from click.testing import CliRunner\nfrom tokalign.cli.main import cli\n"
                        "assert CliRunner().invoke(cli, ['--help']).exit_code == 0") == []


@pytest.mark.parametrize("module", [f"tokalign.probes.{p.stem}" for p in _modules("probes") if p.stem != "__init__"])
def test_probes_modules_import_without_torch(module):
    assert _heavy_after(f"import {module}") == []


def test_neighbors_path_is_torch_free():
    assert _heavy_after("import tokalign.probes.neighbors, tokalign.probes.run_artifacts") == []


def test_pyproject_lists_every_package():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"tokalign." + ".".join(init.parent.relative_to(ROOT).parts)
             for package in PACKAGES for init in (ROOT / package).rglob("__init__.py")}
    assert found - listed == set()


@pytest.mark.slow
def test_a_regular_install_holds_and_imports_every_package(tmp_path):
    """``pip install .`` (not editable) ships every sub-package: import each from the installed copy alone."""
    import tomllib

    import shutil

    source, target = tmp_path / "src", tmp_path / "site"  # build from a copy: the checkout stays clean
    source.mkdir()
    for name in ("pyproject.toml", "README.md", *PACKAGES):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree else {}))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True, cwd=tmp_path)
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    code = ("import importlib, tokalign.align\n"
            f"assert tokalign.align.__file__.startswith({str(target)!r}), tokalign.align.__file__\n"
            f"for name in {packages!r}: importlib.import_module(name)\n")
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env)
