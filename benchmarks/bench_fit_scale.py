"""Memory and step time of ``tokalign fit`` against the number of pairs: two corpus sizes, side by side.

Builds two synthetic corpora (uniform random image tokens at the paper's shape, 1,024 tokens from a
16,384-code book; random caption ids with the LM's real tokenizer identity, so the fit uses the stored ids),
runs the same short ``tokalign fit`` on each in a subprocess, and prints for each: peak RSS (``wait4``
rusage of that child: everything resident, memory-mapped corpus pages included), peak anonymous RSS (sampled
from ``/proc/PID/status``: the process's own memory, the page cache of the mapped shards aside), start-up
seconds and seconds per step (median over the logged windows after the first), with the ratios large/small.
Target for 10x the pairs: RSS ratio < 1.2, step-time ratio < 1.1.  The corpora are deleted afterwards
(``--keep`` keeps them).  Disk: about 2.1 GB per million pairs.

    python benchmarks/bench_fit_scale.py [--sizes 100000 1000000] [--steps 30] [--workdir /tmp]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "helpers"))  # the one random-corpus writer, shared with the tests


def build(folder: Path, items: int, lm) -> Path:
    from random_corpus import write_random_corpus

    from tokalign.align.lm.captions import text_tokenizer_identity

    return write_random_corpus(folder, items, text_tokenizer=text_tokenizer_identity(lm), vocab_size=lm.vocab_size)


def _sample_anon(pid: int, peak: dict, done: threading.Event) -> None:
    while not done.is_set():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            for key in ("RssAnon", "RssFile"):
                value = int(status.split(f"{key}:")[1].split()[0]) * 1024
                peak[key] = max(peak.get(key, 0), value)
        except (OSError, IndexError, ValueError):
            pass
        time.sleep(0.05)


def run_fit(corpus: Path, run: Path, args) -> dict:
    command = [sys.executable, "-m", "tokalign.cli.main", "fit", "--corpus", str(corpus), "--run", str(run),
               "--lm", args.lm, "--steps", str(args.steps), "--batch-size", str(args.batch), "--holdout", "1024",
               "--log-every", str(args.log_every), "--checkpoint-every", str(10 * args.steps), "--eval-every", "0",
               "--warmup-steps", "5", "--no-progress", "--device", args.device]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak, done = {}, threading.Event()
    sampler = threading.Thread(target=_sample_anon, args=(child.pid, peak, done), daemon=True)
    sampler.start()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise SystemExit(f"fit failed on {corpus}:\n{child.stderr.read().decode()[-3000:]}")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    rates = [r["pairs_per_s"] for r in rows if "pairs_per_s" in r][1:]  # the first window includes warm-up
    step_s = statistics.median(args.batch / r for r in rates)
    return {"rss": usage.ru_maxrss * 1024, "anon": peak.get("RssAnon", 0), "file": peak.get("RssFile", 0),
            "step_s": step_s, "startup_s": wall - args.steps * step_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs=2, default=[100_000, 1_000_000])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--log-every", type=int, default=5)
    parser.add_argument("--lm", default="smollm2-135m")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workdir", type=Path, default=None, help="where the corpora go [default: a temp folder]")
    parser.add_argument("--keep", action="store_true", help="keep the corpora and runs")
    args = parser.parse_args()
    from tokalign.align.lm.load import load_frozen_lm

    lm = load_frozen_lm(args.lm)
    work = Path(tempfile.mkdtemp(prefix="tokalign-scale-", dir=args.workdir))
    results = {}
    try:
        for items in args.sizes:
            t0 = time.perf_counter()
            corpus = build(work / f"corpus-{items}", items, lm)
            print(f"built {items:,} pairs in {time.perf_counter() - t0:.0f} s", flush=True)
            results[items] = run_fit(corpus, work / f"run-{items}", args)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    small, large = (results[n] for n in args.sizes)
    gb = lambda b: f"{b / 2**30:8.2f} GB"  # noqa: E731
    print(f"{'pairs':>28}{args.sizes[0]:>14,}{args.sizes[1]:>14,}   ratio")
    for key, name, fmt in (("rss", "peak RSS (all resident)", gb), ("anon", "peak anonymous RSS", gb),
                           ("file", "peak file-backed RSS", gb), ("step_s", "seconds per step", lambda v: f"{v:11.3f} s"),
                           ("startup_s", "start-up (load, checks)", lambda v: f"{v:11.1f} s")):
        print(f"{name:>28}  {fmt(small[key]):>12}  {fmt(large[key]):>12}   {large[key] / max(small[key], 1e-12):5.2f}")


if __name__ == "__main__":
    main()
