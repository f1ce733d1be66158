"""Image tokenizer throughput: MoVQ (the paper's) against the built-in patch k-means, encode and decode.

* k-means: a ``PatchKMeansTokenizer`` fitted in a second or two on synthetic
  images (gradients, a square, noise; every patch unique, so no help from
  deduplication: the worst case) with ``--kmeans-codebook`` codes (16,384 by
  default).  It runs on the CPU (FAISS) whatever ``--device`` says.
* MoVQ: the Kandinsky 2.2 architecture with random weights (``--movq-path``
  for real ones; speed does not depend on the weights), on each device asked
  for, in each ``--dtype`` that device supports (float16 is CUDA only).

MoVQ paths compared:

* ``encode (numpy)``: ``encode(uint8 array)``, what a caller without torch
  uses: copies to the device and the ids back;
* ``encode_tensor``: images already on the device, ids left there (the
  tokenize loop's fast path, minus its host-to-device copy);
* ``reference``: the plain diffusers path, ``quantize(encode(x).latents)``
  (its nearest-code search runs in the model dtype);
* ``decode (numpy)``: ids -> uint8 images on the host.

Each measurement runs one warm-up batch first.  The default CPU run (4 MoVQ
images) takes about three minutes on 2 cores.  Run:

    python benchmarks/bench_tokenize.py [--device auto|cpu|cuda ...] [--dtype float32 bfloat16 ...]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tokalign.align.image_tokenizers.movq import MoVQTokenizer


def synthetic_images(n: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients with a bright square and noise: uint8 (n, 256, 256, 3)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0.0, 1.0, 256, dtype=np.float32)
    out = np.empty((n, 256, 256, 3), np.float32)
    for i in range(n):
        colour = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
        out[i] = colour[0] * ramp[:, None, None] + colour[1] * ramp[None, :, None]
        top, left = rng.integers(0, 192, size=2)
        out[i, top : top + 64, left : left + 64] = rng.uniform(0, 255, size=3)
    out += rng.normal(0, 8, size=out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def rate(fn, items, batch: int, sync=None, warmup: int | None = None) -> float:
    """Items per second of ``fn`` over ``items`` in chunks of ``batch``, after a warm-up call on ``warmup`` items."""
    fn(items[: warmup or batch])
    if sync:
        sync()
    start = time.perf_counter()
    for s in range(0, len(items), batch):
        fn(items[s : s + batch])
    if sync:
        sync()
    return len(items) / (time.perf_counter() - start)


def bench_kmeans(args, rows: list) -> None:
    """k-means encode/decode images/s on the CPU (skipped when FAISS is missing)."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        print("k-means skipped: faiss is not installed here")
        return
    from tokalign.align.image_tokenizers.kmeans import PatchKMeansTokenizer

    start = time.perf_counter()
    tokenizer = PatchKMeansTokenizer.fit(synthetic_images(args.kmeans_fit_images, seed=1),
                                         codebook_size=args.kmeans_codebook, iterations=2)
    print(f"k-means: {args.kmeans_codebook} codes fitted on {args.kmeans_fit_images} images in "
          f"{time.perf_counter() - start:.1f} s")
    images = synthetic_images(args.kmeans_images, seed=2)
    encode = rate(tokenizer.encode, images, args.kmeans_batch)
    decode = rate(tokenizer.decode, tokenizer.encode(images), args.kmeans_batch)
    rows.append(("k-means", "encode / decode (numpy)", "cpu", "float32", args.kmeans_batch, encode, decode))


def bench_movq(args, device: str, dtype: str, rows: list) -> None:
    """MoVQ images/s on ``device`` in ``dtype``: numpy encode, encode_tensor, diffusers reference, decode."""
    if args.movq_path:
        tokenizer = MoVQTokenizer.from_pretrained(args.movq_path, device=device, dtype=dtype, batch_size=args.batch)
    else:
        tokenizer = MoVQTokenizer.random(seed=0, device=device, dtype=dtype, batch_size=args.batch)
    n = args.movq_images if args.movq_images else (4 if device == "cpu" else 256)
    images = synthetic_images(n, seed=3)
    on_device = torch.from_numpy(images).to(device)
    cuda = device.startswith("cuda")
    sync, warmup = (torch.cuda.synchronize, args.batch) if cuda else (None, 1)  # one image warms a CPU up
    ids = []
    encode = rate(lambda x: ids.append(tokenizer.encode(x)), images, args.batch, sync, warmup)
    ids = np.concatenate(ids[1:])  # the warm-up call's ids come first
    fast = rate(tokenizer.encode_tensor, on_device, args.batch, sync, warmup)
    decode = rate(tokenizer.decode, ids, args.batch, sync, warmup)
    rows.append(("MoVQ", "encode / decode (numpy)", device, dtype, args.batch, encode, decode))
    rows.append(("MoVQ", "encode_tensor (on device)", device, dtype, args.batch, fast, None))
    if args.reference:
        rows.append(("MoVQ", "reference: diffusers quantize", device, dtype, args.batch,
                     rate(lambda x: reference_encode(tokenizer, x), on_device, args.batch, sync, warmup), None))
    del tokenizer, on_device
    if cuda:
        torch.cuda.empty_cache()


@torch.inference_mode()
def reference_encode(tokenizer: MoVQTokenizer, pixels: torch.Tensor) -> torch.Tensor:
    """The plain diffusers path: normalize, ``encode(x).latents``, ``quantize`` (search in the model dtype)."""
    model = tokenizer.model
    x = (pixels.permute(0, 3, 1, 2).float() / 127.5 - 1.0).to(model.dtype).contiguous()
    return model.quantize(model.encode(x).latents)[2][2].view(len(pixels), -1)


def devices(choice: list[str]) -> list[str]:
    if choice == ["auto"]:
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return choice


def print_table(rows: list) -> None:
    """The rates, and how many times faster k-means (CPU) is than each row (MoVQ / k-means = 1 / that)."""
    kmeans = next((row[5:] for row in rows if row[0] == "k-means"), None)
    print(f"\n{'tokenizer':9} {'path':31} {'device':6} {'dtype':8} {'batch':>5} {'encode img/s':>13} "
          f"{'decode img/s':>13} {'k-means x faster':>17} {'(decode)':>9}")
    for name, path, device, dtype, batch, encode, decode in rows:
        cells = [f"{encode:13.2f}", f"{decode:13.2f}" if decode is not None else f"{'-':>13}"]
        for value, base, width in zip((encode, decode), kmeans or (None, None), (17, 9)):
            cells.append(f"{f'{base / value:.3g}x':>{width}}" if value is not None and base else f"{'-':>{width}}")
        print(f"{name:9} {path:31} {device:6} {dtype:8} {batch:5d} {' '.join(cells)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", nargs="+", default=["auto"], help="auto = cpu, plus cuda when available")
    parser.add_argument("--dtype", nargs="+", default=["float32"], choices=["float32", "bfloat16", "float16"],
                        help="MoVQ compute dtypes (float16 runs on CUDA only)")
    parser.add_argument("--batch", type=int, default=4, help="MoVQ images per batch")
    parser.add_argument("--movq-images", type=int, default=None, help="timed MoVQ images (default 4 on cpu, 256 on cuda)")
    parser.add_argument("--movq-path", default=None, help="real MoVQ weights (a local folder)")
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip the plain diffusers quantize path")
    parser.add_argument("--kmeans-codebook", type=int, default=16384)
    parser.add_argument("--kmeans-fit-images", type=int, default=32)
    parser.add_argument("--kmeans-images", type=int, default=256)
    parser.add_argument("--kmeans-batch", type=int, default=256)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
          f"cuda: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'none'}")
    rows: list = []
    bench_kmeans(args, rows)
    for device in devices(args.device):
        for dtype in args.dtype:
            if dtype == "float16" and device == "cpu":
                continue
            bench_movq(args, device, dtype, rows)
    print_table(rows)


if __name__ == "__main__":
    main()
