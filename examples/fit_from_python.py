"""Build a small shapes corpus and fit an image-token table from Python.

    python examples/fit_from_python.py --out /tmp/tokalign-example

The same steps as `make demo`, at a smaller size, through the library API
instead of the CLI.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tokalign.align.tokenize.demo_corpus import DemoCorpusConfig, build_demo_corpus
from tokalign.align.fit.loop import fit
from tokalign.align.fit.config import FitConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/tokalign-example"))
    parser.add_argument("--lm", default="smollm2-135m", help="default alias, HF id, local folder or .gguf file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    corpus = args.out / "corpus"
    if not (corpus / "manifest.json").exists():
        build_demo_corpus(DemoCorpusConfig(out=corpus, items=4096, codebook_size=4096, codebook_images=1024, lm=args.lm))
    result = fit(FitConfig(corpus=corpus, run_dir=args.out / "run", lm=args.lm, steps=200, batch_size=512,
                           holdout=512, lr=5e-2, warmup_steps=20, resume=(args.out / "run" / "config.json").exists()))
    r = result.retrieval
    print(f"loss {result.final_loss:.3f}, temperature {result.temperature:.4f}")
    print(f"held-out image->text R@1 {r['i2t']['R@1']:.3f} (chance {r['chance']['R@1']:.4f})")


if __name__ == "__main__":
    main()
