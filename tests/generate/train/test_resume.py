"""``--resume`` continues exactly: the same losses and the same final weights as an uninterrupted run."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from tokalign.generate.train.loop import train

SPEED = ("tokens_per_s", "useful_tokens_per_s", "pad_tokens_per_s", "mfu")


def _rows(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k not in SPEED} for row in rows]


@pytest.mark.slow
def test_resumed_run_equals_an_uninterrupted_one(make_config):
    # 80 training pairs, 16 per step: 5 steps per epoch, so the run crosses an epoch (new order, new dropout draws)
    optim = {"steps": 7, "batch_tokens": 16 * 32}
    whole = train(make_config("whole", optim=optim, log_every=2, checkpoint_every=3))
    assert whole.finished and whole.steps == 7
    first = train(make_config("parts", optim=optim, log_every=2, checkpoint_every=3, stop_after=4))
    assert not first.finished and first.steps == 4
    second = train(make_config("parts", optim=optim, log_every=2, checkpoint_every=3, resume=True))
    assert second.finished and second.steps == 7

    a, b = whole.run_dir, second.run_dir
    assert _rows(a) == _rows(b)
    wa, wb = load_file(str(a / "model" / "model.safetensors")), load_file(str(b / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert (wa[key] == wb[key]).all(), key
    assert second.final == whole.final and second.step0 == whole.step0


def test_resume_of_a_finished_run_does_nothing(make_config):
    done = train(make_config("done", optim={"steps": 2}))
    again = train(make_config("done", optim={"steps": 2}, resume=True))
    assert again.finished and again.final == done.final


def test_resume_with_other_settings_is_refused(make_config):
    from tokalign.align.errors import TokalignError

    train(make_config("changed", optim={"steps": 4}, stop_after=2))
    with pytest.raises(TokalignError, match=r"differ from the run's \(optim\)"):
        train(make_config("changed", optim={"steps": 4, "lr": 5e-3}, resume=True))
