"""CLIP score with a tiny randomly initialized open_clip model loaded from a local folder."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


def test_clip_score_on_a_tiny_random_open_clip(clip_folder):
    from tokalign.generate.probe.clip_score import load_clip

    scorer = load_clip(clip_folder)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)) for _ in range(3)]
    got = scorer.score(images, ["a red circle", "a blue square", "a green triangle"])
    assert got["pairs"] == 3 and all(0 <= s <= 100 for s in got["per_pair"])
    assert got["clip_score"] == pytest.approx(np.mean(got["per_pair"]))
    assert scorer.identity["name"] == "tiny-clip" and len(scorer.identity["weights_sha256"]) == 64
    assert scorer.score(images, ["a red circle", "a blue square", "a green triangle"]) == got  # deterministic


def test_the_probe_samples_held_out_captions_and_scores_them(good_generator, clip_folder, tmp_path):
    from tokalign.generate.probe.config import ProbeConfig
    from tokalign.generate.probe.run import run_probe

    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat . the dog sat on the log .", encoding="utf-8")
    config = ProbeConfig(model=good_generator, out=tmp_path / "probe", clip_model=clip_folder, clip_samples=2,
                         text_file=text, max_new_tokens=2, k=3, device="cpu", progress=False)
    quality = run_probe(config).report["image_quality"]
    assert quality["pairs"] == 2 and 0 <= quality["clip_score"] <= 100
    assert quality["clip_model"]["name"] == "tiny-clip" and quality["captions"]["held_out"] is False
    pngs = sorted((tmp_path / "probe" / "samples" / "images").glob("*.png"))
    assert len(pngs) == 2 and Image.open(pngs[0]).size == (256, 256)


def test_held_out_captions_follow_the_trainers_split(good_generator, tmp_path):
    import json

    from tokalign.generate.model_folder import read_record
    from tokalign.generate.probe.clip_samples import held_out_captions
    from tokalign.generate.sequences.dataset import split

    record = read_record(good_generator)
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"format": "tokalign-generator-run", "config": {
        "data": {"holdout": 3}, "run": {"seed": 5}}}))
    captions, where = held_out_captions(run / "model", record, 2)
    assert where["held_out"] is True and where["indices"] == split(6, 3, 5)[1][:2].tolist() and len(captions) == 2
    captions, where = held_out_captions(good_generator, record, 2)
    assert where["held_out"] is False and where["indices"] == [4, 5]


def test_the_clip_probe_writes_its_samples_inside_the_model_by_default(good_generator, clip_folder, tmp_path):
    import shutil

    from tokalign.generate.probe.config import ProbeConfig
    from tokalign.generate.probe.run import run_probe

    model = tmp_path / "model"
    shutil.copytree(good_generator, model)
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat . the dog sat on the log .", encoding="utf-8")
    config = ProbeConfig(model=model, clip_model=clip_folder, clip_samples=1, text_file=text, max_new_tokens=2, k=3,
                         device="cpu", progress=False)
    assert run_probe(config).report["image_quality"]["pairs"] == 1
    assert len(list((model / "probe" / "samples" / "images").glob("*.png"))) == 1
