"""The whole ``tokalign fit`` against a plain PyTorch ``embedding_bag`` fit script, on the CPU, in one run.

Target (the issue): on the 2-core CPU the whole fit stays >= 2x an ``embedding_bag`` fit script.

Both sides train the same thing on the same corpus, each in its own process, timed from launch to exit:

* **tokalign**: ``tokalign fit --corpus C --run R --steps N --batch-size B --device cpu --no-progress`` with
  ``--holdout 0 --eval-every 0`` (no held-out evaluation) and ``--checkpoint-every`` past the end (only the
  checkpoint a fit always writes at its last step); its own printed ``pairs/s overall, ... steady`` are parsed.
* **peer**: this file re-invoked with ``--peer``: the fit a researcher would write.  It loads the same frozen LM
  input embeddings (``tokalign.align.lm.load.load_frozen_lm``, the same cache), draws a random permutation of
  the corpus per epoch, reads each batch from the memory-mapped corpus, and per step computes the image vectors
  with ``F.embedding_bag(tokens, table, mode="mean")``, the caption vectors with ``F.embedding_bag`` over the
  frozen embeddings (offsets from the caption lengths, no gradient), L2-normalizes both, takes CLIP's symmetric
  cross-entropy with a learnable, clamped logit scale, and steps ``torch.optim.AdamW`` (fused where this torch
  has it on the CPU) with a warm-up/cosine learning rate.  It saves the final table (safetensors) and prints
  its figures on one ``PEER {json}`` line.

Figures, for each side: *steady* pairs/s (the steps after the first ``--log-every`` window, the fit's own
definition), *loop* pairs/s (every step over the loop's time; tokalign's "overall"), *whole* pairs/s (every
step over the process's wall time: start-up, LM and corpus loading, the loop and the final writes), and the
seconds outside the loop (wall - loop).  Rounds interleave the two sides, alternating which goes first, so a
load that comes and goes on a shared machine falls on both.  The synthetic corpus (uniform random image
tokens: 1,024 from 16,384 codes; random caption ids with the LM's tokenizer identity) and the run folders live
in a temp folder that is deleted at the end.  Nothing is downloaded: the LM must be in the tokalign cache or
the default offline gguf.

    python benchmarks/bench_fit_whole.py [--quick] [--steps 40] [--rounds 2] [--threads 2] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "helpers"))  # the one random-corpus writer, shared with the tests

LR, BETAS, EPS, WARMUP, MIN_LR_RATIO = 5e-2, (0.9, 0.98), 1e-6, 40, 0.05  # tokalign fit's defaults
INIT_LOGIT_SCALE, MAX_LOGIT_SCALE = math.log(1 / 0.07), math.log(100.0)
TOKALIGN_LINE = re.compile(r"([\d,]+) pairs/s overall, ([\d,]+) steady")


# ------------------------------------------------------------------ options
def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=None, help="corpus folder [default: a synthetic one]")
    parser.add_argument("--items", type=int, default=None, help="synthetic corpus size [8192; --quick: 4096]")
    parser.add_argument("--lm", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps [40; --quick: 20]")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--log-every", type=int, default=10, help="the first window, left out of 'steady'")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads in both processes")
    parser.add_argument("--quick", action="store_true", help="fewer steps, a smaller corpus")
    parser.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)  # internal: run the peer fit
    parser.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)  # internal: the peer's run folder
    args = parser.parse_args(argv)
    args.steps = args.steps or (20 if args.quick else 40)
    args.items = args.items or (4096 if args.quick else 8192)
    if args.steps <= args.log_every:
        parser.error(f"--steps {args.steps} must exceed --log-every {args.log_every} (steady needs a second window)")
    return args


# ------------------------------------------------------------------ the peer: a plain PyTorch fit script
def peer_lr(step: int, total: int) -> float:
    if step < WARMUP:
        return LR * (step + 1) / WARMUP
    progress = (step - WARMUP) / max(1, total - WARMUP)
    return LR * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))


def peer_batch(corpus, indices):
    """(image tokens (B, L) int64, caption ids flat int64, caption offsets (B,) int64) of one batch."""
    import numpy as np
    import torch

    tokens = torch.from_numpy(corpus.image_tokens(indices).astype(np.int64))
    parts = corpus.caption_ids(indices)
    lengths = np.fromiter((len(p) for p in parts), dtype=np.int64, count=len(parts))
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    ids = torch.from_numpy(np.concatenate(parts).astype(np.int64))
    return tokens, ids, torch.from_numpy(offsets)


def peer_optimizer(params):
    import torch

    try:
        return torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=0.0, fused=True), True
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(params, lr=LR, betas=BETAS, eps=EPS, weight_decay=0.0), False


def peer_step(table, logit_scale, frozen, batch, optimizer, lr: float):
    import torch
    import torch.nn.functional as F

    tokens, ids, offsets = batch
    for group in optimizer.param_groups:
        group["lr"] = lr
    image = F.normalize(F.embedding_bag(tokens, table, mode="mean"), dim=-1)
    with torch.no_grad():
        text = F.normalize(F.embedding_bag(ids, frozen, offsets, mode="mean"), dim=-1)
    logits = logit_scale.exp() * image @ text.T
    labels = torch.arange(len(logits))
    loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        logit_scale.clamp_(0.0, MAX_LOGIT_SCALE)
    return loss.item()


def peer_main(args: argparse.Namespace) -> None:
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from tokalign.align.formats.corpus import open_corpus
    from tokalign.align.lm.load import load_frozen_lm

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    corpus = open_corpus(args.corpus)
    frozen = load_frozen_lm(args.lm).embeddings
    d = frozen.shape[1]
    std = float(frozen.norm(dim=1).mean()) / d ** 0.5
    table = torch.nn.Parameter(torch.randn(corpus.codebook_size, d) * std)
    logit_scale = torch.nn.Parameter(torch.tensor(INIT_LOGIT_SCALE))
    optimizer, fused = peer_optimizer([table, logit_scale])
    per_epoch = corpus.items // args.batch_size
    if per_epoch < 1:
        raise SystemExit(f"the corpus holds {corpus.items} items, fewer than one batch of {args.batch_size}")
    rng, order = np.random.default_rng(0), None
    begun = time.perf_counter()
    for step in range(args.steps):
        if step % per_epoch == 0:
            order = rng.permutation(corpus.items)
        indices = order[(step % per_epoch) * args.batch_size:(step % per_epoch + 1) * args.batch_size]
        loss = peer_step(table, logit_scale, frozen, peer_batch(corpus, indices), optimizer, peer_lr(step, args.steps))
        if step + 1 == args.log_every:
            first_window = time.perf_counter()
    ended = time.perf_counter()
    save_file({"image_embeddings": table.detach().contiguous()}, str(args.out / "table.safetensors"))
    steady = (args.steps - args.log_every) * args.batch_size / (ended - first_window)
    print("PEER " + json.dumps({"loop": args.steps * args.batch_size / (ended - begun), "steady": steady,
                                "final_loss": loss, "fused_adamw": fused, "threads": torch.get_num_threads()}), flush=True)


# ------------------------------------------------------------------ the two sides, timed as processes
def child_env(args: argparse.Namespace) -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    if args.threads:
        env.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    return env


def timed(command: list[str], env: dict) -> tuple[str, float]:
    """Run ``command`` to its end; its stdout and wall seconds (launch to exit).  A failure ends the benchmark."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{' '.join(command[:4])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout, wall


def tokalign_command() -> list[str]:
    script = Path(sys.executable).parent / "tokalign"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "tokalign.cli.main"]


def run_tokalign(corpus: Path, run: Path, args: argparse.Namespace) -> dict:
    command = tokalign_command() + [
        "fit", "--corpus", str(corpus), "--run", str(run), "--lm", args.lm, "--steps", str(args.steps),
        "--batch-size", str(args.batch_size), "--device", "cpu", "--no-progress", "--holdout", "0",
        "--eval-every", "0", "--checkpoint-every", str(10 * args.steps), "--keep-checkpoints", "1",
        "--log-every", str(args.log_every)]
    out, wall = timed(command, child_env(args))
    found = TOKALIGN_LINE.search(out)
    if not found:
        raise SystemExit(f"no 'pairs/s overall, ... steady' line in tokalign's output:\n{out[-2000:]}")
    loop, steady = (float(x.replace(",", "")) for x in found.groups())
    return figures(loop, steady, wall, args)


def run_peer(corpus: Path, run: Path, args: argparse.Namespace) -> dict:
    run.mkdir(parents=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--peer", "--corpus", str(corpus), "--out", str(run),
               "--lm", args.lm, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
               "--log-every", str(args.log_every)] + (["--threads", str(args.threads)] if args.threads else [])
    out, wall = timed(command, child_env(args))
    line = next((x for x in out.splitlines() if x.startswith("PEER ")), None)
    if line is None:
        raise SystemExit(f"no PEER line in the peer's output:\n{out[-2000:]}")
    result = json.loads(line[5:])
    return {**figures(result["loop"], result["steady"], wall, args), "fused_adamw": result["fused_adamw"]}


def figures(loop: float, steady: float, wall: float, args: argparse.Namespace) -> dict:
    pairs = args.steps * args.batch_size
    return {"steady": steady, "loop": loop, "whole": pairs / wall, "outside": wall - pairs / loop, "wall": wall}


# ------------------------------------------------------------------ the corpus and the rounds
def build_corpus(folder: Path, args: argparse.Namespace) -> Path:
    from random_corpus import write_random_corpus

    from tokalign.align.lm.captions import text_tokenizer_identity
    from tokalign.align.lm.load import load_frozen_lm

    lm = load_frozen_lm(args.lm)
    return write_random_corpus(folder, args.items, text_tokenizer=text_tokenizer_identity(lm), vocab_size=lm.vocab_size)


def run_rounds(corpus: Path, work: Path, args: argparse.Namespace) -> list[dict]:
    rounds = []
    for r in range(args.rounds):
        sides = [("tokalign", run_tokalign), ("peer", run_peer)]
        result = {}
        for name, run in (sides if r % 2 == 0 else sides[::-1]):
            result[name] = run(corpus, work / f"{name}-{r}", args)
            print(f"round {r + 1} {name:>8}: {result[name]['steady']:8,.0f} pairs/s steady, "
                  f"{result[name]['wall']:6.1f} s wall", flush=True)
        result["first"] = sides[0][0] if r % 2 == 0 else sides[1][0]
        rounds.append(result)
    return rounds


# ------------------------------------------------------------------ the report
KEYS = (("steady", "{:>9,.0f}"), ("loop", "{:>9,.0f}"), ("whole", "{:>9,.0f}"), ("outside", "{:>8.1f}s"),
        ("wall", "{:>8.1f}s"))


def row(label: str, side: dict) -> str:
    return f"{label:<22}" + "".join(fmt.format(side[key]) for key, fmt in KEYS)


def ratio_row(label: str, tok: dict, peer: dict) -> str:
    cells = "".join(f"{tok[k] / peer[k]:>8.2f}x" for k, _ in KEYS[:3])
    return f"{label:<22}{cells}"


def median_side(rounds: list[dict], name: str) -> dict:
    return {key: statistics.median(r[name][key] for r in rounds) for key, _ in KEYS}


def _averages(averages: tuple) -> str:
    return " ".join(f"{x:.2f}" for x in averages)


def report(rounds: list[dict], args: argparse.Namespace, load: tuple) -> None:
    import torch

    print(f"\n{datetime.datetime.now().isoformat(timespec='seconds')}   torch {torch.__version__}   "
          f"threads {args.threads or torch.get_num_threads()}   cpus {os.cpu_count()}   "
          f"peer AdamW fused: {rounds[0]['peer']['fused_adamw']}")
    source = args.corpus or f"synthetic, {args.items:,} items"
    print(f"corpus: {source}   steps {args.steps}   batch {args.batch_size}   "
          f"steady = the steps after the first {args.log_every}")
    print(f"load average (1, 5, 15 min) before {_averages(load)}, after {_averages(os.getloadavg())}")
    print(f"\n{'pairs/s':<22}{'steady':>9}{'loop':>9}{'whole':>9}{'outside':>9}{'wall':>9}")
    for i, r in enumerate(rounds, 1):
        print(f"round {i} ({r['first']} first)")
        print(row("  tokalign fit", r["tokalign"]))
        print(row("  peer embedding_bag", r["peer"]))
        print(ratio_row("  ratio tokalign/peer", r["tokalign"], r["peer"]))
    tok, peer = median_side(rounds, "tokalign"), median_side(rounds, "peer")
    print(f"median over {len(rounds)} rounds")
    print(row("  tokalign fit", tok))
    print(row("  peer embedding_bag", peer))
    ratios = {k: statistics.median(r["tokalign"][k] / r["peer"][k] for r in rounds) for k, _ in KEYS[:3]}
    print(f"{'  median ratio':<22}" + "".join(f"{ratios[k]:>8.2f}x" for k, _ in KEYS[:3]))
    print(f"\ntarget >= 2x (whole): {'met' if ratios['whole'] >= 2 else 'NOT met'} ({ratios['whole']:.2f}x)")


def main() -> None:
    args = parse_args()
    if args.peer:
        peer_main(args)
        return
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="tokalign-fit-whole-"))
    try:
        corpus = args.corpus or build_corpus(work / "corpus", args)
        rounds = run_rounds(corpus, work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(rounds, args, load)


if __name__ == "__main__":
    main()
