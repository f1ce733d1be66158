"""``tokalign report`` on a real (tiny) alignment of the shapes corpus."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from tokalign.align.fit.loop import fit
from tokalign.align.fit.config import FitConfig
from tokalign.probes.report import ReportConfig, write_report
from cli_run import refused


@pytest.fixture(scope="module")
def shapes_run(shapes_corpus, tmp_path_factory, tiny_lm, lm_cache):
    run = tmp_path_factory.mktemp("report") / "run"
    fit(FitConfig(corpus=shapes_corpus, run_dir=run, lm=tiny_lm, cache_root=lm_cache, steps=200, batch_size=256,
                  holdout=256, lr=5e-2, warmup_steps=20, progress=False))
    return run


def test_report_writes_every_file_with_consistent_figures(shapes_run):
    figures = write_report(ReportConfig(run=shapes_run, k=5, progress=False))
    folder = shapes_run / "report"
    names = {p.name for p in folder.iterdir()}
    assert names == {"neighbors.csv", "figure7.png", "top1_similarity.png", "unused_image_tokens.json",
                     "report.json", "report.md"}
    for png in ("figure7.png", "top1_similarity.png"):
        with Image.open(folder / png) as im:
            assert im.format == "PNG" and np.asarray(im.convert("L")).std() > 5
    rows = list(csv.DictReader(open(folder / "neighbors.csv", encoding="utf-8")))
    assert len(rows) == 256 * 5 and rows[0]["rank"] == "1"
    assert all(float(a["score"]) >= float(b["score"]) for a, b in zip(rows[:5], rows[1:5]))
    assert json.loads((folder / "report.json").read_text()) == figures
    assert figures["retrieval"] == json.loads((shapes_run / "eval.json").read_text())  # same held-out figures as the fit
    assert "loss" in figures["retrieval"]  # the held-out contrastive loss, at the final logit scale
    rows = [json.loads(x) for x in (shapes_run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "heldout_loss" in r][-1]
    assert last["step"] == 200 and last["heldout_loss"] == figures["retrieval"]["loss"]
    assert figures["curves"]["verdict"] in ("overfitted", "plateaued", "improving")
    assert figures["curves"]["sentence"] in (folder / "report.md").read_text()
    assert 0 <= figures["void"]["top1_share"] <= 1
    assert figures["usage"]["used"] + figures["usage"]["unused"] == 256
    assert "Held-out retrieval" in (folder / "report.md").read_text()


def test_image_tokens_of_one_colour_land_near_that_colour_word_more_often_than_chance(shapes_run, shapes_corpus):
    """Tokens that occur (almost) only inside regions of one colour have that colour word among their neighbours."""
    from tokalign.align.formats.corpus import open_corpus
    from tokalign.align.sources.shapes import COLOUR_NAMES, make_scene, render

    corpus = open_corpus(shapes_corpus)
    items, n_colours = 400, len(COLOUR_NAMES)
    counts = np.zeros((corpus.codebook_size, n_colours + 1))  # last column: patches of mixed colour
    tokens = corpus.image_tokens(np.arange(items))
    for i in range(items):  # the corpus fixture is seed 0, items in order
        _, labels = render(make_scene(0, i))
        patches = labels.reshape(32, 8, 32, 8).transpose(0, 2, 1, 3).reshape(1024, 64)
        pure = (patches == patches[:, :1]).all(axis=1)
        np.add.at(counts, (tokens[i], np.where(pure, patches[:, 0], n_colours)), 1)
    total = counts.sum(axis=1)
    colour = counts[:, :n_colours].argmax(axis=1)
    single = np.flatnonzero((total >= 5) & (counts[np.arange(len(counts)), colour] >= 0.8 * total))
    assert len(single) >= 10

    k = 3
    write_report(ReportConfig(run=shapes_run, k=k, progress=False))
    near: dict[int, list[str]] = {}
    for row in csv.DictReader(open(shapes_run / "report" / "neighbors.csv", encoding="utf-8")):
        near.setdefault(int(row["image_token"]), []).append(row["text"].lstrip("␣"))
    hits = [COLOUR_NAMES[colour[t]] in near[t] for t in single]
    vocab_size = json.loads((shapes_run / "report" / "report.json").read_text())["text_tokens"]
    chance = k / vocab_size
    assert np.mean(hits) > 3 * chance
    red = [h for t, h in zip(single, hits) if COLOUR_NAMES[colour[t]] == "red"]
    assert red and np.mean(red) > chance  # the case: red-region tokens near " red"



def test_report_refuses_a_run_without_a_table_and_writes_nothing(capsys, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    refused(capsys, "report", "--run", str(run), "--no-progress")
    assert list(run.iterdir()) == []


def test_report_refuses_k_larger_than_the_vocabulary(capsys, shapes_run):
    before = sorted(p.name for p in shapes_run.iterdir())
    line = refused(capsys, "report", "--run", str(shapes_run), "-k", "100000", "--out", str(shapes_run / "r2"),
                   "--no-progress")
    assert "-k 100000" in line
    assert sorted(p.name for p in shapes_run.iterdir()) == before
