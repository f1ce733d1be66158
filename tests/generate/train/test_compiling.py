"""torch.compile of the decoder layers: in place (names unchanged), on by default on a GPU only, eager on failure."""

from __future__ import annotations

import logging

import pytest
import torch

from tokalign.align.errors import TokalignError
from tokalign.generate.train.compiling import compile_model, wants_compile


def _model():
    from tiny_llama import tiny_llama_model

    return tiny_llama_model(64, tied=True, seed=1)


def test_auto_compiles_on_a_gpu_only():
    assert wants_compile("auto", torch.device("cuda")) and not wants_compile("auto", torch.device("cpu"))
    assert wants_compile("on", torch.device("cpu")) and not wants_compile("off", torch.device("cuda"))


def test_the_body_is_compiled_in_place_and_a_failure_falls_back_to_eager(caplog):
    model = _model()
    names = list(model.state_dict())
    compiled = compile_model(model, torch.device("cpu"))
    assert all(layer._compiled_call_impl is not None for layer in model.model.layers)
    assert list(model.state_dict()) == names
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []

    def run(options):
        calls.append(options)
        if len(calls) == 1:
            raise RuntimeError("backend compiler failed\nlong trace")
        return "eager result"

    with caplog.at_level(logging.WARNING):
        assert compiled.first_step(run, optimizer, torch.device("cpu")) == "eager result"
    assert compiled.proven and compiled.failed == "RuntimeError: backend compiler failed"
    assert all(layer._compiled_call_impl is None for layer in model.model.layers) and compiled.options.math is None
    assert "training eagerly" in caplog.text and compiled.first_seconds >= 0


def test_a_refusal_at_the_first_step_is_not_taken_for_a_compile_failure():
    compiled = compile_model(_model(), torch.device("cpu"))

    def run(options):
        raise TokalignError("the loss is not finite")

    with pytest.raises(TokalignError):
        compiled.first_step(run, None, torch.device("cpu"))
