"""The pipeline figures of the GPU check, from what the commands wrote (``benchmarks/gpu_checks.sh`` calls it).

Copies the JSON records of the scratch folder into ``OUT/json/`` and writes ``OUT/summary.json``: per step the exit
code and wall time (``OUT/steps.tsv``), the corpus size, the fit's pairs/s (overall and steady), the generator's
tokens/s, MFU and peak memory (median over the logged training rows after the first), the sampler's images/s with
load and sampling time apart. Missing files or keys are reported as null: the commands change under other work.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path

COPIES = {  # scratch path -> name under OUT/json
    "corpus/manifest.json": "corpus_manifest.json",
    "fit/config.json": "fit_config.json",
    "fit/summary.json": "fit_summary.json",
    "fit/eval.json": "fit_eval.json",
    "fit/metrics.jsonl": "fit_metrics.jsonl",
    "gen/run.json": "generator_run.json",
    "gen/summary.json": "generator_summary.json",
    "gen/diagnostics.json": "generator_diagnostics.json",
    "gen/metrics.jsonl": "generator_metrics.jsonl",
    "samples/samples.json": "samples.json",
    "samples/images/000000.png": "sample_000000.png",
    "samples/grid.png": "samples_grid.png",
}
MAX_COPY_BYTES = 8 << 20


def _json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except Exception:
        return None


def _jsonl(path: Path) -> list[dict]:
    rows = []
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    except OSError:
        pass
    return rows


def _median(values) -> float | None:
    values = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return statistics.median(values) if values else None


def _steps(out: Path) -> dict:
    steps = {}
    try:
        for line in (out / "steps.tsv").read_text(encoding="utf-8").splitlines()[1:]:
            name, rc, wall = (line.split("\t") + ["", "", ""])[:3]
            steps[name] = {"rc": int(rc) if rc.lstrip("-").isdigit() else rc, "wall_s": float(wall or 0)}
    except OSError:
        pass
    return steps


def _generator(work: Path) -> dict:
    summary = _json(work / "gen/summary.json") or {}
    rows = [r for r in _jsonl(work / "gen/metrics.jsonl") if r.get("split", "train") == "train" and "tokens_per_s" in r]
    steady = rows[1:] or rows
    memory_keys = sorted({k for r in rows for k in r if "mem" in k.lower()})
    out = {
        "tokens_per_s": summary.get("tokens_per_s"),
        "tokens_per_s_median_logged": _median(r.get("tokens_per_s") for r in steady),
        "useful_tokens_per_s_median_logged": _median(r.get("useful_tokens_per_s") for r in steady),
        "mfu_median_logged": _median(r.get("mfu") for r in steady),
        "logged_rows": len(rows),
    }
    for key in memory_keys:
        out[f"{key}_max_logged"] = max((r[key] for r in rows if isinstance(r.get(key), (int, float))), default=None)
    for key, value in summary.items():
        if key == "final" and isinstance(value, dict):
            out.update({f"final_{k}": v for k, v in value.items() if "loss" in k and not isinstance(v, (dict, list))})
        elif ("mem" in key.lower() or "compile" in key.lower() or key == "steps") and key not in out:
            out[key] = value
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    work, out = args.work, args.out
    (out / "json").mkdir(parents=True, exist_ok=True)
    for source, name in COPIES.items():
        path = work / source
        if path.is_file() and path.stat().st_size <= MAX_COPY_BYTES:
            shutil.copy2(path, out / "json" / name)

    manifest = _json(work / "corpus/manifest.json") or {}
    fit = _json(work / "fit/summary.json") or {}
    samples = _json(work / "samples/samples.json") or {}
    steps = _steps(out)
    record = {
        "steps": steps,
        "corpus": {"items": manifest.get("items"), "tokens_per_image": manifest.get("tokens_per_image")},
        "fit": {k: fit.get(k) for k in ("steps", "pairs_per_s", "pairs_per_s_steady", "final_loss")},
        "generator_train": _generator(work),
        "generator_sample": {k: v for k, v in samples.items()
                             if isinstance(v, (int, float)) and k != "version" or k in ("decoded", "notice")},
    }
    tokenize_wall = steps.get("tokenize", {}).get("wall_s")
    if tokenize_wall and manifest.get("items"):
        record["corpus"]["items_per_s_with_start_up"] = manifest["items"] / tokenize_wall
    (out / "summary.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def show(value):
        if isinstance(value, float):
            return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4g}"
        return str(value)

    print("== pipeline figures (also in summary.json)")
    print("  steps: " + ", ".join(f"{k} rc={v['rc']} {v['wall_s']:.1f}s" for k, v in steps.items()))
    for part in ("corpus", "fit", "generator_train", "generator_sample"):
        figures = {k: v for k, v in record[part].items() if v is not None}
        print(f"  {part}: " + (", ".join(f"{k} {show(v)}" for k, v in figures.items()) or "no figures (step failed?)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
