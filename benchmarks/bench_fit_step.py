"""Training-step throughput of ``tokalign fit``'s image side against its peers, measured side by side.

One step = image vectors, normalization, CLIP loss against fixed caption vectors, backward, fused AdamW
update of the (codebook x d) table, logit-scale clamp.  Every path runs the same step on the same batches;
only the image side differs:

* ``naive``:          ``E[tokens].mean(1)`` (materializes batch x tokens x d; the reference)
* ``embedding_bag``:  ``F.embedding_bag(tokens, E, mode="mean")``: the peer, what a PyTorch user would write
* ``sparse``:         per-image token bags, PyTorch CSR products ``H @ E`` / ``H^T @ dU`` (any device)
* ``kernel``:         the same bags, tokalign's compiled CPU kernel (``align/fit/bag_kernel.py``; what ``fit``
                      uses on a CPU); bags prefetched as in ``fit``, and ``kernel+bags`` building them in the step
* ``sparse+bags``:    (GPU) the sparse products with the bags built on the device inside the step
                      (``bags_from_token_tensor``)
* ``dense``:          (GPU) what ``fit`` runs on a GPU: the batch's token counts built on the device inside the
                      step (one scatter-add), two TF32 passes per product over a hi/lo split (float32-exact;
                      ``align/fit/token_counts.py``); ``dense-tf32`` takes one pass (TF32 rounding of the table)

Paths are timed in interleaved rounds (round r runs every path once), so shared-machine load hits them alike;
the figure per path is the median over rounds and each ratio is taken against ``embedding_bag`` within the same
round (then the median).  ``--breakdown`` times the phases of one step (gather, loss, backward, optimizer) and
the floor a step cannot beat: one read of the table plus the AdamW update.

Token sources: ``uniform`` draws every token independently (~990 distinct of 1,024 per image: what MoVQ
tokens of natural images look like, the worst case for deduplication); ``--corpus DIR`` uses real rows
(e.g. the demo corpus ``data/shapes``).  ``--device cuda`` runs on a GPU (``--dtype bfloat16`` or
``float32``; the kernel path is CPU-only; ``--dense`` adds the dense paths on a CPU).  ``--quick`` is the size
switch for a short run (3 rounds, fewer steps, no naive path: well under a minute on a GPU).  Run:

    python benchmarks/bench_fit_step.py --corpus data/shapes [--threads 2] [--breakdown]
    python benchmarks/bench_fit_step.py --device cuda --quick
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from tokalign.align.defaults import INIT_LOGIT_SCALE, MAX_LOGIT_SCALE
from tokalign.align.fit import bag_kernel
from tokalign.align.fit.allocator import reuse_large_blocks
from tokalign.align.fit.bags import bags_from_token_tensor, bags_from_tokens, image_vectors, naive_image_vectors
from tokalign.align.fit.loss import clip_loss, normalize
from tokalign.align.fit.token_counts import counts_image_vectors, token_counts

DENSE = {"dense": "split", "dense-tf32": "tf32"}  # path -> precision of the count products
ON_DEVICE = ("naive", "embedding_bag", "sparse+bags", *DENSE)  # paths handed the raw tokens on the device


class Step:
    """One path's training step on its own copy of the table and optimizer."""

    def __init__(self, path: str, batch: int, vocab: int, d: int, device: str, dtype: torch.dtype, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.path, self.device, self.vocab = path, device, vocab
        self.table = torch.nn.Parameter((torch.randn(vocab, d, generator=g) * 0.136).to(device, dtype))
        self.scale = torch.nn.Parameter(torch.tensor(INIT_LOGIT_SCALE, device=device))
        self.text = normalize(torch.randn(batch, d, generator=g)).to(device)
        self.opt = torch.optim.AdamW([self.table, self.scale], lr=1e-3, fused=True)

    def inputs(self, tokens: np.ndarray):
        """What the data-loading thread hands the step (prefetched: not timed)."""
        if self.path in ON_DEVICE:
            return torch.from_numpy(tokens.astype(np.int64)).to(self.device)
        if self.path == "kernel+bags":
            return tokens
        weights = np.float32 if self.table.dtype == torch.float32 else np.float64
        bags = bags_from_tokens(tokens, self.vocab, dtype=weights).to(self.device)
        return bags if self.table.dtype in (torch.float32, torch.float64) else _cast(bags, self.table.dtype)

    def image(self, batch) -> torch.Tensor:
        if self.path == "naive":
            return naive_image_vectors(self.table, batch)
        if self.path == "embedding_bag":
            return F.embedding_bag(batch, self.table, mode="mean")
        if self.path in DENSE:
            counts = token_counts(batch, self.vocab, self.table.dtype)
            return counts_image_vectors(self.table, counts, DENSE[self.path])
        if self.path == "kernel+bags":
            batch = bags_from_tokens(batch, self.vocab)
        if self.path == "sparse+bags":
            batch = bags_from_token_tensor(batch, self.vocab, self.table.dtype)
        return image_vectors(self.table, batch, backend="kernel" if self.path.startswith("kernel") else "sparse")

    def __call__(self, batch, timer=None) -> None:
        timer = timer or (lambda name: None)
        image = self.image(batch)
        timer("gather")
        detached = image.detach().float().requires_grad_()
        loss = clip_loss(normalize(detached), self.text, self.scale)
        loss.backward()
        timer("loss")
        image.backward(detached.grad.to(image.dtype))
        timer("backward")
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.scale.clamp_(0, MAX_LOGIT_SCALE)
        timer("optimizer")

    def floor(self) -> float:
        """Seconds of one table read plus one AdamW update (the step's lower bound)."""
        self.table.grad = torch.zeros_like(self.table)
        self.opt.step()
        sync(self.device)
        start = time.perf_counter()
        float(self.table.detach().sum())
        self.opt.step()
        sync(self.device)
        seconds = time.perf_counter() - start
        self.table.grad = None
        return seconds


def _cast(bags, dtype: torch.dtype):
    from dataclasses import replace

    return replace(bags, weights=bags.weights.to(dtype), weights_t=bags.weights_t.to(dtype))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def token_batches(source: str, n: int, batch: int, length: int, vocab: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    if source == "uniform":
        return [rng.integers(0, vocab, size=(batch, length)).astype(np.uint16) for _ in range(n)]
    from tokalign.align.formats.corpus import open_corpus

    corpus = open_corpus(source)
    assert corpus.codebook_size == vocab and corpus.tokens_per_image == length, "corpus shape differs from the benchmark's"
    return [corpus.image_tokens(rng.choice(corpus.items, size=batch, replace=corpus.items < batch)) for _ in range(n)]


def rates(steps: dict[str, Step], batches: list[np.ndarray], rounds: int, timed: int) -> dict[str, list[float]]:
    """Pairs/s of each path per round (after one warm-up step each); paths interleaved within a round."""
    inputs = {name: [s.inputs(b) for b in batches] for name, s in steps.items()}
    for name, step in list(steps.items()):
        try:
            step(inputs[name][0])
        except (NotImplementedError, RuntimeError, ValueError) as exc:  # e.g. no bfloat16 CSR product here
            print(f"  {name}: not available here ({type(exc).__name__}: {str(exc).splitlines()[0][:90]})")
            del steps[name]
    out: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(rounds):
        for name, step in steps.items():
            count = 1 if name == "naive" else timed
            sync(step.device)
            start = time.perf_counter()
            for i in range(count):
                step(inputs[name][(r + i) % len(batches)])
            sync(step.device)
            out[name].append(count * batches[0].shape[0] / (time.perf_counter() - start))
    return out


def breakdown(step: Step, batches: list[np.ndarray], repeats: int) -> dict[str, float]:
    """Median milliseconds of each phase of the step."""
    inputs = [step.inputs(b) for b in batches]
    phases: dict[str, list[float]] = {}
    for i in range(repeats + 1):
        sync(step.device)
        last = [time.perf_counter()]

        def timer(name: str) -> None:
            sync(step.device)
            now = time.perf_counter()
            if i:  # the first run warms up
                phases.setdefault(name, []).append(1e3 * (now - last[0]))
            last[0] = now

        step(inputs[i % len(inputs)], timer)
    return {k: statistics.median(v) for k, v in phases.items()}


def report(label: str, per_round: dict[str, list[float]], batch: int) -> None:
    peer = per_round["embedding_bag"]
    print(f"[{label}]  path               pairs/s   ms/step   vs embedding_bag (median of per-round ratios)")
    for name, values in per_round.items():
        rate = statistics.median(values)
        if name == "naive":
            ratio = rate / statistics.median(peer)
        else:
            ratio = statistics.median(v / p for v, p in zip(values, peer))
        print(f"  {name:<18}{rate:10,.0f}{1e3 * batch / rate:10.3f}   {ratio:5.2f}x")
    if "dense" in per_round:
        print("  targets (GPU): dense >= 3x embedding_bag; the fit >= 1,000,000 pairs/s at batch 1,024", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=16384)
    parser.add_argument("--dim", type=int, default=576)
    parser.add_argument("--steps", type=int, default=None,
                        help="timed steps per path per round (naive: 1) [default: 4 on a CPU, 50 on a GPU]")
    parser.add_argument("--batches", type=int, default=4, help="distinct token batches the steps cycle through")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="short run: 3 rounds, fewer steps, no naive path")
    parser.add_argument("--dense", action="store_true", help="also run the dense paths on a CPU (slow there)")
    parser.add_argument("--corpus", default=None, help="also benchmark real token rows from this corpus")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-naive", action="store_true", help="skip the slow naive reference")
    parser.add_argument("--breakdown", action="store_true", help="also time the phases of a step and the floor")
    args = parser.parse_args()
    gpu = args.device.startswith("cuda")
    if args.steps is None:
        args.steps = (20 if gpu else 2) if args.quick else (50 if gpu else 4)
    if args.quick:
        args.rounds, args.no_naive = min(args.rounds, 3), True
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu":
        reuse_large_blocks()  # as `fit` does: every path's dense gradient reuses its heap block
    dtype = getattr(torch, args.dtype)
    cpu_kernel = args.device == "cpu" and dtype == torch.float32 and bag_kernel.available()
    paths = (["naive"] if not args.no_naive else []) + ["embedding_bag", "sparse"]
    paths += ["kernel", "kernel+bags"] if cpu_kernel else []
    paths += ["sparse+bags"] if gpu else []
    paths += list(DENSE) if gpu or args.dense else []
    print(f"shape: batch {args.batch}, tokens/image {args.tokens}, codebook {args.vocab}, d {args.dim}; {args.device} "
          f"{args.dtype}; torch {torch.__version__}, {torch.get_num_threads()} threads; {args.rounds} rounds of "
          f"{args.steps} steps" + (f"; {torch.cuda.get_device_name(args.device)}" if gpu else ""), flush=True)
    for source in ["uniform"] + ([args.corpus] if args.corpus else []):
        batches = token_batches(source, args.batches, args.batch, args.tokens, args.vocab)
        distinct = np.mean([len(np.unique(row)) for row in batches[0][:64]])
        label = f"{'uniform' if source == 'uniform' else source}: {distinct:.0f} distinct tokens/image"
        steps = {p: Step(p, args.batch, args.vocab, args.dim, args.device, dtype) for p in paths}
        report(label, rates(steps, batches, args.rounds, args.steps), args.batch)
        if args.breakdown:
            floor_ms = 1e3 * statistics.median(steps["embedding_bag"].floor() for _ in range(3))
            print(f"  phases (median ms): gather / loss / backward / optimizer   [floor: table read + AdamW {floor_ms:.1f} ms]")
            for name in [p for p in steps if p != "naive"]:
                ms = breakdown(steps[name], batches, args.rounds)
                print(f"  {name:<18}" + " / ".join(f"{ms[k]:6.1f}" for k in ("gather", "loss", "backward", "optimizer"))
                      + f"   = {sum(ms.values()):6.1f}")
        del steps


if __name__ == "__main__":
    main()
