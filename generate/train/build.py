"""Everything a training run needs before its first step, built in an order that refuses bad input early.

Order: the cheap checks (sequence length against the corpus grid), then the base LM, the init (which refuses an
export made for another LM, codebook or image tokenizer), the freeze preset, and only then anything written into
the run folder (the memory-mapped sequences, built once by the main process; a corpus tokenized by another text
tokenizer is refused before a byte is written). So a refused run leaves nothing half-written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from tokalign.align.formats.corpus import open_corpus
from tokalign.align.formats.generator_init import VocabLayout
from tokalign.align.lm.captions import tokenizer_fingerprint
from tokalign.generate.config import GeneratorTrainConfig
from tokalign.generate.model.base import load_base_lm
from tokalign.generate.model.diagnostics import step0_diagnostics
from tokalign.generate.model.freeze import apply_freeze, merge_split_rows
from tokalign.generate.model.heads import HEADS, calibration_rows
from tokalign.generate.model.init_modes import InitRequest, initialize
from tokalign.generate.model_folder import GeneratorRecord
from tokalign.generate.sequences.build import build_sequences, max_caption_tokens, open_sequences
from tokalign.generate.sequences.dataset import caption_batch, split
from tokalign.generate.train import run_folder as rf
from tokalign.generate.train.data import DatasetSource

log = logging.getLogger(__name__)
DIAGNOSTIC_CAPTIONS = 64  #: held-out captions the step-0 text KL is measured on


@dataclass
class Prepared:
    model: Any  #: the expanded, freeze-applied model (split tables under ``new-rows``)
    tokenizer: Any  #: the base LM's tokenizer (the save adds the new tokens)
    layout: VocabLayout
    source: DatasetSource
    train_items: np.ndarray
    holdout_items: np.ndarray
    record: GeneratorRecord  #: the model folder's record (``steps`` filled in at the save)
    identities: dict  #: what ``--resume`` must find unchanged (LM, corpus, export by hash)
    provenance: dict  #: where every row block came from
    diagnostics: Callable[[Any], dict]  #: the plain model -> its step-0 diagnostics (before any step)
    finalize: Callable[[Any], Any]  #: the trained model -> a plain model to ``save_pretrained``


def prepare(config: GeneratorTrainConfig, accelerator) -> Prepared:
    """Build model, data and records for ``config`` (module docstring); the main process writes the sequences."""
    m, d = config.model, config.data
    corpus = open_corpus(d.corpus)
    cap = max_caption_tokens(d.seq_len, corpus.tokens_per_image, d.mode)
    train_items, holdout_items = split(corpus.items, d.holdout, config.run.seed)
    base = load_base_lm(m.lm, num_layers=m.num_layers)
    rf.check_positions(d.seq_len, getattr(base.model.config, "max_position_embeddings", None), m.lm)
    layout = VocabLayout(base.text_rows, corpus.codebook_size)
    text_sha = tokenizer_fingerprint(base.tokenizer)
    calibration = calibration_rows(corpus, train_items, layout, seq_len=d.seq_len, mode=d.mode,
                                   text_tokenizer_sha256=text_sha) if HEADS[m.head].needs_calibration else None
    result = initialize(base, m.init, InitRequest(layout, seed=config.run.seed, init_from=m.init_from,
                                                  image_tokenizer=corpus.image_tokenizer, untie=m.untie,
                                                  head=m.head, marker=m.marker, calibration=calibration))
    model = result.model
    freeze = apply_freeze(model, m.train_only, text_rows=layout.text_rows)
    model.set_attn_implementation("sdpa")
    folder = config.run.run_dir / rf.SEQUENCES
    if accelerator.is_main_process:
        sequences = build_sequences(corpus, folder, layout, seq_len=d.seq_len, mode=d.mode,
                                    text_tokenizer_sha256=text_sha, progress=config.run.progress)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        sequences = open_sequences(folder)
    record = GeneratorRecord(layout=layout, mode=d.mode, grid=tuple(corpus.image_tokenizer.get("grid") or (1, corpus.tokens_per_image)),
                             image_tokenizer=dict(corpus.image_tokenizer), caption_dropout=d.caption_dropout,
                             seq_len=d.seq_len, max_caption_tokens=cap, corpus=str(corpus.root.resolve()),
                             text_tokenizer=dict(corpus.text_tokenizer),
                             base_lm={"spec": base.spec, "identity": base.identity,
                                      "embedding_sha256": base.embedding_sha256},
                             init=result.provenance)
    identities = {"lm_embedding_sha256": base.embedding_sha256, "text_tokenizer_sha256": text_sha,
                  "corpus": {"items": corpus.items, "image_tokenizer_sha256": corpus.image_tokenizer.get("sha256")},
                  "init_from": result.provenance.get("init_from", {}).get("tensor_sha256")}
    provenance = {**result.provenance, "freeze": freeze.preset, "trainable": freeze.trainable, "total": freeze.total,
                  "truncated_captions": sequences.record.get("truncated", 0)}
    return Prepared(model, base.tokenizer, layout, DatasetSource(sequences, d.caption_dropout, config.run.seed),
                    train_items, holdout_items, record, identities, provenance,
                    _diagnostics(layout, result.pretrained, sequences, holdout_items), _finalize)


def _diagnostics(layout, pretrained: bool, sequences, holdout_items) -> Callable[[Any], dict]:
    """``model -> step-0 diagnostics``: row norms and, for pretrained inits, the text-side KL on held-out captions
    (the held-out losses come from the loop's evaluation, the same figures as every later evaluation)."""
    def run(model) -> dict:
        captions = caption_batch(sequences, holdout_items[:DIAGNOSTIC_CAPTIONS]) if len(holdout_items) else None
        return step0_diagnostics(model, layout, pretrained=pretrained, captions=captions)
    return run


def _finalize(model):
    merge_split_rows(model)
    return model
