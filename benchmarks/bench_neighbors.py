"""Cold-process wall time of ``tokalign neighbors`` on a run.

Each measurement starts a fresh Python process (the console script next to
this interpreter, else ``python -m tokalign.cli.main``), as a user typing the
command would; the OS file cache is warm after the first call, which is then
reported separately.  Also prints how long the imports alone take, since they
bound every CLI call from below.

    python benchmarks/bench_neighbors.py --run runs/demo [--repeats 5] [--image-token 405] [--text-token " red"]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BUDGET_S = 3.0


def _command() -> list[str]:
    script = Path(sys.executable).with_name("tokalign")
    if script.is_file():
        return [str(script)]
    found = shutil.which("tokalign")
    return [found] if found else [sys.executable, "-m", "tokalign.cli.main"]


def _time(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return elapsed


def _report(name: str, first: float, times: list[float]) -> None:
    verdict = "within" if statistics.median(times) <= BUDGET_S else "OVER"
    print(f"{name:<28} first {first:5.2f} s | median {statistics.median(times):5.2f} s  min {min(times):5.2f} s  "
          f"max {max(times):5.2f} s over {len(times)} runs ({verdict} the {BUDGET_S:.0f} s budget)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run folder written by `tokalign fit`")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--image-token", type=int, default=405)
    parser.add_argument("--text-token", default=" red")
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()

    base = _command()
    cases = {
        "image->text": [*base, "neighbors", "--run", str(args.run), "--image-token", str(args.image_token), "-k", str(args.k)],
        "text->image": [*base, "neighbors", "--run", str(args.run), "--text-token", args.text_token, "-k", str(args.k)],
        "image->text --json": [*base, "neighbors", "--run", str(args.run), "--image-token", str(args.image_token),
                               "-k", str(args.k), "--json"],
    }
    imports = [sys.executable, "-c", "import tokalign.cli.main, faiss, tokenizers"]
    print(f"tokalign neighbors, cold processes, run {args.run}")
    for name, argv in {"imports only (cli, faiss)": imports, **cases}.items():
        first = _time(argv)
        _report(name, first, [_time(argv) for _ in range(args.repeats)])


if __name__ == "__main__":
    main()
