"""Each format owns its names: a format's file names are spelled only in the modules that own that format.

Everyone else imports the name (or the reader) from its owner, so a renamed file changes one module.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("align", "generate", "probes", "cli")

# a file name -> the modules allowed to spell it (its format's owners)
OWNERS = {
    "config.json": {"align/formats/run_folder.py", "align/lm/load.py", "align/image_tokenizers/movq_weights.py",
                    "generate/model_folder.py"},  # the fit's record; a Hugging Face model's config
    "run.json": {"generate/train/run_folder.py"},
    "tokalign_generator.json": {"generate/model_folder.py"},
    "manifest.json": {"align/formats/corpus.py"},
    "study.json": {"generate/experiment/folder.py"},
    "summary.json": {"align/formats/run_folder.py", "generate/train/run_folder.py"},
    "metrics.jsonl": {"align/formats/run_folder.py", "generate/train/run_folder.py"},
    "table.safetensors": {"align/formats/run_folder.py"},
    "samples.json": {"generate/sample/output.py"},
    "probe.json": {"generate/probe/run.py"},
    "sequences.json": {"generate/sequences/build.py"},
    "tokenize.json": {"align/tokenize/state.py"},
    "report.json": {"probes/report.py"},
    "trainer.json": {"align/training/checkpoint.py"},
    "state.safetensors": {"align/training/checkpoint.py"},
    "diagnostics.json": {"generate/train/run_folder.py"},
}


def _string_literals(path: Path) -> set[str]:
    """The string constants of a module's code (docstrings left out); a path is built from a constant that is
    exactly the file name, while messages and help texts may name any file in their prose."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings}


def test_no_module_spells_another_formats_file_names():
    spelled = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = str(path.relative_to(ROOT))
            literals = _string_literals(path)
            for literal, owners in OWNERS.items():
                if name not in owners and literal in literals:
                    spelled.append(f"{name} spells {literal!r} (owned by {', '.join(sorted(owners))})")
    assert spelled == []
