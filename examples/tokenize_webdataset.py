"""Write img2dataset-style WebDataset shards, tokenize them, and fit on the result, from Python.

    python examples/tokenize_webdataset.py --out /tmp/tokalign-wds
    python examples/tokenize_webdataset.py --out /tmp/tokalign-wds --movq weights/kandinsky-2-2-decoder/movq

The shards hold shape scenes as ``KEY.jpg`` + ``KEY.txt`` + ``KEY.json``, the
layout img2dataset writes; point ``TokenizeConfig.source`` at your own
download instead.  Without ``--movq`` the k-means tokenizer is fitted on the
input; with it, the paper's MoVQGAN encodes the images (slow on a CPU).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import tarfile
from pathlib import Path

from PIL import Image

from tokalign.align.fit.loop import fit
from tokalign.align.fit.config import FitConfig
from tokalign.align.sources.shapes import shape_item
from tokalign.align.sources.spec import SourceSpec
from tokalign.align.tokenize.pipeline import tokenize_corpus
from tokalign.align.tokenize.config import TokenizeConfig


def write_shards(folder: Path, shards: int, per_shard: int) -> str:
    """Shape scenes as WebDataset tars; returns their brace pattern."""
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        with tarfile.open(folder / f"{s:05d}.tar", "w") as tar:
            for i in range(per_shard):
                image, caption = shape_item(seed=7, index=s * per_shard + i)
                key = f"{s:05d}{i:04d}"
                jpeg = io.BytesIO()
                Image.fromarray(image).save(jpeg, format="JPEG", quality=95)
                meta = json.dumps({"caption": caption, "key": key}).encode()
                for suffix, data in (("jpg", jpeg.getvalue()), ("txt", caption.encode()), ("json", meta)):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return str(folder / f"{{00000..{shards - 1:05d}}}.tar")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/tokalign-wds"))
    parser.add_argument("--movq", default=None, help="MoVQ weights folder (see README); default: fit k-means")
    parser.add_argument("--lm", default="smollm2-135m")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    pattern = write_shards(args.out / "shards", shards=4, per_shard=256)
    kind = "movq" if args.movq else "kmeans"
    result = tokenize_corpus(TokenizeConfig(
        source=SourceSpec(input=pattern), out=args.out / "corpus", image_tokenizer=kind,
        image_tokenizer_path=args.movq, fit_codebook=not args.movq, codebook_size=1024, codebook_images=512,
        lm=args.lm, resume=(args.out / "corpus").exists()))
    print(f"corpus: {result.manifest['items']} items, skipped {result.manifest['skipped'] or 'none'}")

    run = fit(FitConfig(corpus=args.out / "corpus", run_dir=args.out / "run", lm=args.lm, steps=100, batch_size=256,
                        holdout=128, lr=5e-2, warmup_steps=10, resume=(args.out / "run" / "config.json").exists()))
    r = run.retrieval
    print(f"loss {run.final_loss:.3f}; held-out image->text R@1 {r['i2t']['R@1']:.3f} (chance {r['chance']['R@1']:.4f})")


if __name__ == "__main__":
    main()
