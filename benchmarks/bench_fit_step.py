"""Training-step throughput: the bag-of-tokens fast path against the naive reference.

One step = image vectors, normalization, CLIP loss against fixed caption
vectors, backward, fused AdamW update of the (codebook x d) table, logit-scale
clamp.  Both paths run the same step on the same data; only the image side
differs:

* naive:  ``E[tokens].mean(1)`` (materializes batch x tokens x d)
* fast:   per-image token bags, ``H @ E`` forward, ``H^T @ dU`` backward

Token sources: ``uniform`` draws every token independently (no repeats within
an image beyond chance: the worst case for deduplication); ``--corpus DIR``
uses real token rows from a corpus (e.g. the demo shapes corpus).  Run:

    python benchmarks/bench_fit_step.py [--corpus data/shapes] [--threads 2]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from tokalign.align.fit.bags import bags_from_tokens, image_vectors, naive_image_vectors
from tokalign.align.fit.loss import INIT_LOGIT_SCALE, MAX_LOGIT_SCALE, clip_loss, normalize


def make_step(batch: int, vocab: int, d: int, fast: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    table = torch.nn.Parameter(torch.randn(vocab, d, generator=g) * 0.136)
    scale = torch.nn.Parameter(torch.tensor(INIT_LOGIT_SCALE))
    text = normalize(torch.randn(batch, d, generator=g))
    opt = torch.optim.AdamW([table, scale], lr=1e-3, fused=True)

    def step(tokens: np.ndarray, bags=None) -> float:
        if fast:
            bags = bags if bags is not None else bags_from_tokens(tokens, vocab)
            image = image_vectors(table, bags)
        else:
            image = naive_image_vectors(table, torch.from_numpy(tokens.astype(np.int64)))
        loss = clip_loss(normalize(image), text, scale)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            scale.clamp_(max=MAX_LOGIT_SCALE)
        return loss.item()

    return step


def timed(step, batches, bags=None) -> float:
    """Pairs per second over ``batches`` after one warm-up step."""
    step(batches[0], None if bags is None else bags[0])
    start = time.perf_counter()
    for i, tokens in enumerate(batches[1:], start=1):
        step(tokens, None if bags is None else bags[i])
    return len(batches[1:]) * batches[0].shape[0] / (time.perf_counter() - start)


def token_batches(source: str, n: int, batch: int, length: int, vocab: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if source == "uniform":
        return [rng.integers(0, vocab, size=(batch, length)).astype(np.uint16) for _ in range(n)]
    from tokalign.align.formats.corpus import open_corpus

    corpus = open_corpus(source)
    assert corpus.codebook_size == vocab and corpus.tokens_per_image == length, "corpus shape differs from the benchmark's"
    return [corpus.image_tokens(rng.choice(corpus.items, size=batch, replace=corpus.items < batch)) for _ in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=16384)
    parser.add_argument("--dim", type=int, default=576)
    parser.add_argument("--steps", type=int, default=8, help="timed fast steps (the naive path runs 3)")
    parser.add_argument("--corpus", default=None, help="also benchmark real token rows from this corpus")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"shape: batch {args.batch}, tokens/image {args.tokens}, codebook {args.vocab}, d {args.dim}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    sources = ["uniform"] + ([args.corpus] if args.corpus else [])
    naive_rate = None
    for source in sources:
        batches = token_batches(source, args.steps + 1, args.batch, args.tokens, args.vocab)
        distinct = np.mean([len(np.unique(row)) for row in batches[0][:64]])
        if naive_rate is None:
            naive_rate = timed(make_step(args.batch, args.vocab, args.dim, fast=False), batches[:4])
            print(f"naive E[tokens].mean(1)          {naive_rate:10,.0f} pairs/s   1.0x  (uniform tokens)")
        bags = [bags_from_tokens(b, args.vocab) for b in batches]
        fast_inline = timed(make_step(args.batch, args.vocab, args.dim, fast=True), batches)
        fast_prefetched = timed(make_step(args.batch, args.vocab, args.dim, fast=True), batches, bags)
        label = "uniform" if source == "uniform" else "corpus"
        print(f"[{label}: {distinct:.0f} distinct tokens/image]")
        print(f"fast, bags built in the step     {fast_inline:10,.0f} pairs/s  {fast_inline / naive_rate:5.1f}x")
        print(f"fast, bags prefetched (as in fit){fast_prefetched:10,.0f} pairs/s  {fast_prefetched / naive_rate:5.1f}x")
    assert math.isfinite(naive_rate)


if __name__ == "__main__":
    main()
