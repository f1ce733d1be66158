"""Fixtures of the generator training tests: a tiny LLaMA LM, a small synthetic corpus, a config factory."""

from __future__ import annotations


import pytest

SEQ_LEN = 32  # 16 image tokens + up to 5 caption words + 6 structure tokens, padded


@pytest.fixture
def make_config(gen_lm, gen_corpus, tmp_path):
    """``make_config(run="run", model={...}, data={...}, optim={...}, **run_fields)`` -> GeneratorTrainConfig."""
    from tokalign.generate.config import DataConfig, GeneratorTrainConfig, ModelConfig, OptimConfig, RunConfig

    def make(run="run", model=None, data=None, optim=None, **run_fields):
        m = {"init": "random-rows", "lm": gen_lm, **(model or {})}
        d = {"corpus": gen_corpus, "seq_len": SEQ_LEN, "holdout": 16, "caption_dropout": 0.25, **(data or {})}
        o = {"steps": 4, "batch_tokens": 8 * SEQ_LEN, "micro_batch": 4, "warmup_steps": 1, "lr": 1e-2, **(optim or {})}
        r = {"run_dir": tmp_path / run, "log_every": 1, "eval_every": 2, "checkpoint_every": 2, "progress": False,
             "device": "cpu", **run_fields}
        return GeneratorTrainConfig(ModelConfig(**m), DataConfig(**d), OptimConfig(**o), RunConfig(**r))

    return make


@pytest.fixture
def cli_args(gen_lm, gen_corpus):
    """``cli_args(run, *extra, lm=None, corpus=None)``: ``generator train`` arguments for a tiny run."""
    def args(run, *extra, lm=None, corpus=None) -> list[str]:
        return ["generator", "train", "--corpus", str(corpus or gen_corpus), "--run", str(run), "--lm", str(lm or gen_lm),
                "--seq-len", str(SEQ_LEN), "--holdout", "16", "--steps", "2", "--batch-tokens", str(8 * SEQ_LEN),
                "--micro-batch", "4", "--warmup-steps", "1", "--lr", "0.01", "--device", "cpu", "--no-progress",
                "--checkpoint-every", "2", *map(str, extra)]
    return args
