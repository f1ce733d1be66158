"""A small real-image corpus: Google's Noto emoji (64x64 PNGs) captioned with their Unicode names.

    npm pack emoji-datasource-google@16.0.0 && tar xzf emoji-datasource-google-16.0.0.tgz   # ~74 MB, the npm registry
    python examples/emoji_corpus.py --package package --out data/emoji-images
    tokalign tokenize --input data/emoji-images --out data/emoji --image-tokenizer kmeans --fit-codebook \
        --codebook-size 4096 --codebook-images 512

Writes ``OUT/<code points>.png`` (one per emoji that has a Google image, skin-tone variants left out, the
transparent background flattened onto white) and ``OUT/captions.jsonl`` (``{"file_name", "caption"}``, the
caption being the lowercased Unicode name, e.g. "grinning face with smiling eyes"). Refuses an ``OUT`` that
holds anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--package", type=Path, required=True, help="the unpacked emoji-datasource-google folder")
    parser.add_argument("--out", type=Path, required=True, help="image folder to write (must be empty or new)")
    args = parser.parse_args()
    table = args.package / "emoji.json"
    if not table.is_file():
        print(f"error: {table} not found; pass the folder `npm pack emoji-datasource-google` unpacks to", file=sys.stderr)
        return 2
    if args.out.exists() and any(args.out.iterdir()):
        print(f"error: {args.out} is not empty; pass a new folder", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for entry in json.loads(table.read_text()):
        source = args.package / "img" / "google" / "64" / entry["image"]
        if not entry.get("has_img_google") or not source.is_file() or not entry.get("name"):
            continue
        with Image.open(source) as image:
            rgba = image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        flat.save(args.out / entry["image"])
        rows.append({"file_name": entry["image"], "caption": entry["name"].lower()})
    with open(args.out / "captions.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    print(f"{len(rows)} images and captions in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
