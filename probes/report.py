"""``tokalign report``: how good an alignment is, in one folder.

Writes (atomically, into ``RUN/report`` unless told otherwise)::

    neighbors.csv             top-k text tokens of every image token: image_token, rank, text_id, text, score, void
    top1_similarity.png       histogram of each image token's best cosine similarity to any text token
    figure7.png               training and held-out contrastive loss, learned temperature and held-out R@1
                              against step (the paper's Figure 7, with the held-out curves of ``--eval-every``)
    unused_image_tokens.json  image tokens that never occur in the corpus (their rows never trained)
    report.json               every figure below, machine-readable
    report.md                 the figures and plots, tied to the run's configuration

The void share applies the rule in ``void_tokens.py`` to each image token's
top-1 neighbour, beside the share of void tokens in the whole vocabulary (what
a random neighbour would give).  ``report.md`` says in one sentence whether the
run plateaued or overfitted, by the rule in ``tokalign.align.fit.curves``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tokalign.align.formats import run_folder as rd
from tokalign.align.formats import outputs
from tokalign.align.formats.atomic import atomic_dir
from tokalign.align.errors import TokalignError
from tokalign.align.search.faiss_ip import exact_ip_search
from tokalign.align.training.progress import progress_bar

from tokalign.probes.run_artifacts import open_run
from tokalign.probes.token_text import piece_text
from tokalign.probes.void_tokens import is_void_text

REPORT_JSON = "report.json"
outputs.register_kind(outputs.REPORT, signature=(REPORT_JSON, "top1_similarity", lambda v: isinstance(v, dict)))

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportConfig:
    run: Path
    out: Path | None = None
    k: int = 10
    corpus: Path | None = None
    chunk: int = 2048
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "run", Path(self.run))
        if self.out is not None:
            object.__setattr__(self, "out", Path(self.out))
        if self.k < 1:
            raise TokalignError(f"-k {self.k} must be at least 1")

    @property
    def folder(self) -> Path:
        return self.out if self.out is not None else self.run / rd.REPORT_DIR


def write_report(config: ReportConfig) -> dict:
    """Compute every figure of the report and write its folder; return ``report.json``'s content."""
    outputs.claim_output_dir(config.folder, outputs.REPORT, keep=(config.run,))
    run = open_run(config.run)
    table, text = run.table, run.embeddings
    if config.k > len(text):
        raise TokalignError(f"-k {config.k} is larger than the text vocabulary ({len(text)} tokens); lower -k")
    saved = rd.read_json(config.run / rd.CONFIG)
    scores, ids = _search_all(table, text, config)
    void = _void_mask(run.vocab, len(text))
    corpus = _open_corpus(config, saved)
    figures = {
        "run": str(config.run), "k": config.k,
        "image_tokens": int(len(table)), "text_tokens": int(len(text)),
        "top1_similarity": _stats(scores[:, 0]),
        "void": {"top1_share": float(void[ids[:, 0]].mean()), "topk_share": float(void[ids].mean()),
                 "vocabulary_share": float(void.mean())},
    }
    usage = None
    if corpus is not None:
        from tokalign.probes.token_usage import token_usage

        usage = token_usage(corpus)
        used = usage.occurrences > 0
        figures["usage"] = {"used": usage.used, "unused": int((~used).sum()),
                            "void_top1_share_of_used": float(void[ids[used, 0]].mean()) if used.any() else None}
        figures["retrieval"] = _holdout_retrieval(corpus, saved, table, text, run.vocab,
                                                  float(run.table_meta["final_logit_scale"]))
    figures["curves"] = _curves(config.run)
    with atomic_dir(config.folder) as tmp:
        _write_neighbors(tmp / "neighbors.csv", scores, ids, void, run.vocab)
        _write_plots(tmp, config.run, scores[:, 0])
        if usage is not None:
            (tmp / "unused_image_tokens.json").write_text(json.dumps([int(i) for i in usage.unused_ids]) + "\n")
        (tmp / REPORT_JSON).write_text(json.dumps(figures, indent=2) + "\n")
        (tmp / "report.md").write_text(_markdown(figures, saved, examples=_examples(ids, scores, run.vocab)))
    return figures


# ------------------------------------------------------------------ pieces
def _search_all(table: np.ndarray, text: np.ndarray, config: ReportConfig) -> tuple[np.ndarray, np.ndarray]:
    bar = progress_bar(config.progress, desc="neighbours", unit="tok", total=len(table))
    scores, ids = [], []
    for lo in range(0, len(table), config.chunk):
        s, i, _ = exact_ip_search(table[lo:lo + config.chunk], text, config.k)
        scores.append(s)
        ids.append(i)
        bar.update(min(config.chunk, len(table) - lo))
    bar.close()
    return np.concatenate(scores), np.concatenate(ids)


def _void_mask(vocab, size: int) -> np.ndarray:
    mask = np.ones(size, dtype=bool)  # rows no vocabulary piece names count as void
    for i in range(min(size, len(vocab))):
        piece = vocab.piece(i)
        if piece is not None:
            mask[i] = is_void_text(piece_text(piece, vocab.mode), vocab.is_special(i))
    return mask


def _open_corpus(config: ReportConfig, saved: dict):
    from tokalign.align.formats.corpus import MANIFEST, open_corpus

    path = config.corpus or Path(saved["corpus"]["path"])
    if not (Path(path) / MANIFEST).is_file():
        log.warning("corpus %s not found: the report leaves out token usage and held-out retrieval (pass --corpus)", path)
        return None
    corpus = open_corpus(path)
    if corpus.image_tokenizer.get("sha256") != saved["corpus"]["image_tokenizer"].get("sha256"):
        raise TokalignError(f"corpus {path} was made with another image tokenizer than the run's; pass the run's --corpus")
    return corpus


def _holdout_retrieval(corpus, saved: dict, table: np.ndarray, text: np.ndarray, vocab, logit_scale: float) -> dict | None:
    """The fit's own held-out evaluation (same function, split, scale and loss chunk): equals ``eval.json``."""
    import torch

    from tokalign.align.fit.evaluate import evaluate_holdout
    from tokalign.align.fit.split import holdout_indices
    from tokalign.align.lm.captions import caption_vectors

    holdout = holdout_indices(saved["split"])
    if holdout.size == 0:
        return None
    ids = [vocab.encode(c) for c in corpus.captions(holdout)]
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in ids], out=offsets[1:])
    caption_vecs = caption_vectors(torch.from_numpy(text), np.concatenate(ids).astype(np.int64), offsets)
    return evaluate_holdout(torch.from_numpy(table), corpus, holdout, caption_vecs, logit_scale=logit_scale,
                            loss_batch=int(saved["config"]["batch_size"]))


def _curves(run: Path) -> dict | None:
    """The best held-out step and the plateau/overfitting verdict from ``metrics.jsonl`` (None without held-out rows)."""
    from tokalign.align.fit.curves import best_heldout, heldout_rows, heldout_verdict

    rows = rd.read_metrics(run)
    if not heldout_rows(rows):
        return None
    return {"best": best_heldout(rows), **heldout_verdict(rows)}


def _stats(values: np.ndarray) -> dict:
    q = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "max": float(values.max()), "q05": float(q[0]), "q25": float(q[1]), "median": float(q[2]),
            "q75": float(q[3]), "q95": float(q[4])}


def _write_neighbors(path: Path, scores: np.ndarray, ids: np.ndarray, void: np.ndarray, vocab) -> None:
    shown = {int(i): vocab.display(int(i)) for i in np.unique(ids)}
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image_token", "rank", "text_id", "text", "score", "void"])
    for image_token in range(len(ids)):
        for rank, (t, s) in enumerate(zip(ids[image_token], scores[image_token]), start=1):
            writer.writerow([image_token, rank, int(t), shown[int(t)], f"{s:.5f}", int(void[t])])
    path.write_text(buffer.getvalue(), encoding="utf-8")


def _write_plots(folder: Path, run: Path, top1: np.ndarray) -> None:
    from tokalign.align.fit.curves import heldout_rows
    from tokalign.probes.plots import plot_histogram, plot_training_curves

    rows = rd.read_metrics(run)
    metrics = [m for m in rows if "loss" in m and "temperature" in m]
    if metrics:
        plot_training_curves(metrics, folder / "figure7.png", heldout=heldout_rows(rows))
    plot_histogram(top1, folder / "top1_similarity.png", xlabel="cosine similarity of the nearest text token",
                   title="image tokens: best match among text tokens")


def _examples(ids: np.ndarray, scores: np.ndarray, vocab, count: int = 8) -> list[str]:
    rows = np.linspace(0, len(ids) - 1, num=min(count, len(ids))).astype(int)
    return [f"| {r} | " + ", ".join(f"`{vocab.display(int(t))}` {s:.3f}" for t, s in zip(ids[r][:5], scores[r][:5])) + " |"
            for r in rows]


def _markdown(f: dict, saved: dict, examples: list[str]) -> str:
    cfg, top1, void = saved["config"], f["top1_similarity"], f["void"]
    lines = [f"# Alignment report: `{f['run']}`", "",
             f"LM `{saved['lm']['spec']}` (d_model {saved['lm']['d_model']}, {f['text_tokens']:,} text tokens); "
             f"{f['image_tokens']:,} image tokens ({saved['corpus']['image_tokenizer'].get('kind')}); "
             f"{cfg['steps']} steps at batch {cfg['batch_size']}, lr {cfg['lr']}, seed {cfg['seed']}.", "",
             "## Training", "", "![loss and temperature](figure7.png)", "",
             *([f["curves"]["sentence"], ""] if f.get("curves") else []),
             "## Nearest text tokens", "",
             f"Top-1 cosine similarity: mean {top1['mean']:.3f}, median {top1['median']:.3f} "
             f"(5%-95%: {top1['q05']:.3f}-{top1['q95']:.3f}).", "", "![top-1 similarity](top1_similarity.png)", "",
             f"Semantically void top-1 neighbours: **{void['top1_share']:.1%}** of image tokens "
             f"({void['topk_share']:.1%} of all top-{f['k']} neighbours), against {void['vocabulary_share']:.1%} void tokens "
             "in the vocabulary. Void = special, or no letter in the token's text (see `probes/void_tokens.py`).", "",
             "| image token | nearest text tokens (cosine) |", "|---|---|", *examples, "",
             f"All top-{f['k']} neighbours: `neighbors.csv`."]
    if "usage" in f:
        u = f["usage"]
        lines += ["", "## Corpus usage", "", f"{u['used']:,} image tokens occur in the corpus, {u['unused']:,} never do "
                  "(`unused_image_tokens.json`; their rows never received a gradient)."]
        if u["void_top1_share_of_used"] is not None:
            lines.append(f"Void top-1 share among used tokens: {u['void_top1_share_of_used']:.1%}.")
    if f.get("retrieval"):
        r = f["retrieval"]
        lines += ["", f"## Held-out retrieval ({r['pairs']} pairs)", "", "| | R@1 | R@5 | R@10 |", "|---|---|---|---|"]
        for key, name in (("i2t", "image->text"), ("t2i", "text->image"), ("chance", "chance")):
            lines.append(f"| {name} | " + " | ".join(f"{r[key].get(k, float('nan')):.4f}" for k in ("R@1", "R@5", "R@10")) + " |")
        if "loss" in r:
            lines += ["", f"Held-out contrastive loss at the final logit scale: {r['loss']:.4f}."]
    return "\n".join(lines) + "\n"
