"""Step-0 diagnostics: row norms, the text-side KL of the expansion, bucketed held-out losses."""

from __future__ import annotations

import copy
import json
import math

import torch

from tokalign.align.formats.generator_init import VocabLayout
from tokalign.align.lm.captions import tokenizer_fingerprint
from tokalign.generate.model.base import load_base_lm
from tokalign.generate.model.diagnostics import heldout_losses, row_norm_stats, step0_diagnostics, text_kl
from tokalign.generate.model.init_modes import InitRequest, initialize
from tokalign.generate.sequences.build import build_sequences
from tokalign.generate.sequences.dataset import SequenceDataset, caption_batch


def _setup(spec, corpus, tmp_path, mode="random-rows"):
    base = load_base_lm(spec)
    reference = copy.deepcopy(base.model)
    layout = VocabLayout(base.text_rows, 64)
    result = initialize(base, mode, InitRequest(layout, seed=0))
    sequences = build_sequences(corpus, tmp_path / "seq", layout, seq_len=40,
                                text_tokenizer_sha256=tokenizer_fingerprint(base.tokenizer))
    return result, reference, layout, sequences


def test_row_norm_stats_report_each_block(tiny_llama, synthetic_corpus, tmp_path):
    result, _, layout, _ = _setup(tiny_llama, synthetic_corpus(), tmp_path)
    stats = row_norm_stats(result.model, layout)
    text = result.model.get_input_embeddings().weight[:layout.text_rows].detach()
    assert math.isclose(stats["input"]["text"]["mean"], float(text.norm(dim=1).mean()), rel_tol=1e-6)
    assert stats["input"]["image"]["rows"] == 64 and stats["input"]["structure"]["rows"] == 7
    assert math.isclose(stats["input"]["image"]["mean"], stats["input"]["text"]["mean"], rel_tol=1e-5)
    assert (stats["output"] == "tied") == ("untied" not in tiny_llama)


def test_text_kl_is_what_the_expansion_costs_the_text_side(tiny_llama_tied, synthetic_corpus, tmp_path):
    result, reference, layout, sequences = _setup(tiny_llama_tied, synthetic_corpus(), tmp_path)
    ids, mask = caption_batch(sequences, range(20))
    with_base = text_kl(result.model, ids, mask, layout, base_model=reference)
    alone = text_kl(result.model, ids, mask, layout)
    assert abs(with_base["kl_text"]) < 1e-5 and with_base["positions"] == int((mask[:, 1:] * mask[:, :-1]).sum())
    assert with_base["kl_full"] > 0 and 0 < with_base["non_text_mass"] < 1
    for key in ("kl_full", "kl_text", "non_text_mass"):
        assert math.isclose(with_base[key], alone[key], rel_tol=1e-4, abs_tol=1e-6)
    logits = result.model(input_ids=ids[:1, :2]).logits[0, 0].detach()  # one position: -log of text mass
    expected = -float(logits.log_softmax(-1)[:layout.text_rows].logsumexp(-1))
    one = text_kl(result.model, ids[:1, :2], torch.ones(1, 2, dtype=torch.long), layout, base_model=reference)
    assert math.isclose(one["kl_full"], expected, rel_tol=1e-4)


def test_scratch_init_moves_the_text_distribution(tiny_llama_tied, synthetic_corpus, tmp_path):
    result, reference, layout, sequences = _setup(tiny_llama_tied, synthetic_corpus(), tmp_path, mode="scratch")
    ids, mask = caption_batch(sequences, range(8))
    assert text_kl(result.model, ids, mask, layout, base_model=reference)["kl_text"] > 1e-3
    empty = text_kl(result.model, ids[:, :1], torch.zeros_like(ids[:, :1]), layout)
    assert empty["positions"] == 0 and empty["kl_full"] is None


def test_heldout_bucket_losses_recombine_to_the_total(tiny_llama_untied, synthetic_corpus, tmp_path):
    result, _, layout, sequences = _setup(tiny_llama_untied, synthetic_corpus(), tmp_path)
    data = SequenceDataset(sequences, range(12))
    batches = [data.batch(range(0, 6)), data.batch(range(6, 12))]
    out = heldout_losses(result.model, batches, layout)
    buckets = ("text", "image", "structure")
    assert out["tokens"] == sum(out[f"{b}_tokens"] for b in buckets)
    assert math.isclose(out["loss"] * out["tokens"], sum(out[f"{b}_loss"] * out[f"{b}_tokens"] for b in buckets),
                        rel_tol=1e-9)
    assert out["image_tokens"] == 12 * 16 and out["structure_tokens"] == 12 * 5  # <doc> is never a target
    assert out["image_uniform_loss"] == math.log(64)
    report = step0_diagnostics(result.model, layout, pretrained=True, heldout_batches=batches,
                               captions=caption_batch(sequences, range(4)))
    json.dumps(report)
    assert set(report) == {"row_norms", "heldout", "text_kl"}
