"""Head treatments: an aligned init whose step 0 keeps the LM's text predictions and starts image positions well.

The tiny LLaMAs are first pretrained on captions of the shapes grammar (fresh scenes, not the corpus's), so
they predict caption text as a real LM predicts its language: confidently, and as well on held-out captions
(an LM trained on the random word bags of the default synthetic corpus has nothing to predict; its held-out
caption loss, 6.4 nats, is above that of a uniform guess, and any new row takes a share of its flat mass).
The corpus's captions come from the same grammar. Everything costly is made once per LM (module fixtures): the
corpus, the pretrained LM, the fit and export, the held-out sequences, and the inits the tests compare.
"""

from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch

from tokalign.align.fit.config import FitConfig
from tokalign.align.fit.export import ExportConfig, export_run
from tokalign.align.fit.loop import fit
from tokalign.align.fit.table import load_table
from tokalign.align.formats.corpus import open_corpus
from tokalign.align.formats.generator_init import VocabLayout
from tokalign.align.lm.captions import tokenizer_fingerprint
from tokalign.generate.model.base import is_tied, load_base_lm
from tokalign.generate.model.diagnostics import step0_diagnostics
from tokalign.generate.model.freeze import apply_freeze
from tokalign.generate.model.heads import calibration_rows
from tokalign.generate.model.init_modes import InitRequest, initialize
from tokalign.generate.model.split_rows import merge_split_rows
from tokalign.generate.sequences.build import build_sequences
from tokalign.generate.sequences.dataset import SequenceDataset, caption_batch, split

CODEBOOK, SEQ_LEN, HOLDOUT = 64, 40, 16
FIT = dict(steps=100, batch_size=16, holdout=16, warmup_steps=5, log_every=50, checkpoint_every=1000, progress=False,
           lr=5e-2)
PRETRAIN = dict(captions=4096, seed=12345, steps=150, batch=128, lr=1e-2)  #: the tiny LMs' pretraining on the grammar


def _pretrain_on_grammar(folder) -> float:
    """Train the LM in ``folder`` on fresh grammar captions (``PRETRAIN``); returns the last batch's loss."""
    from synthetic_corpus import grammar_captions
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoded = [tokenizer(c, add_special_tokens=False)["input_ids"]
               for c in grammar_captions(PRETRAIN["captions"], PRETRAIN["seed"])]
    ids = torch.zeros(len(encoded), max(len(c) for c in encoded), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for j, c in enumerate(encoded):
        ids[j, :len(c)], mask[j, :len(c)] = torch.tensor(c, dtype=torch.long), 1
    labels = ids.masked_fill(mask == 0, -100)
    torch.manual_seed(0)
    draws = torch.Generator().manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=PRETRAIN["lr"])
    model.train()
    for _ in range(PRETRAIN["steps"]):
        pick = torch.randint(0, len(encoded), (PRETRAIN["batch"],), generator=draws)
        loss = model(input_ids=ids[pick], attention_mask=mask[pick], labels=labels[pick]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(folder, safe_serialization=True)
    return loss.item()


@pytest.fixture(scope="module", params=["tied", "untied"])
def setup(request, tmp_path_factory, tiny_lm, lm_cache):
    """(LM folder, corpus, default export, fit table, held-out batches) for a trained tiny LLaMA, tied or untied."""
    from synthetic_corpus import write_synthetic_corpus
    from tiny_llama import make_tiny_llama

    from tokalign.align.lm.load import load_frozen_lm

    root = tmp_path_factory.mktemp(f"heads-{request.param}")
    corpus = write_synthetic_corpus(root / "corpus", load_frozen_lm(tiny_lm, lm_cache), codebook=CODEBOOK, grammar=True)
    spec = make_tiny_llama(root / "lm", tied=request.param == "tied", seed=3)
    assert _pretrain_on_grammar(spec) < 1.5  # the grammar's captions are predictable: a uniform guess costs ~4 nats
    fit(FitConfig(corpus=corpus, run_dir=root / "run", lm=str(spec), cache_root=lm_cache, **FIT))
    export = export_run(ExportConfig(run=root / "run", out=root / "init.safetensors")).out  # the default export
    table = load_table(root / "run" / "table.safetensors")[0]
    base = load_base_lm(spec)
    sequences = build_sequences(corpus, root / "sequences", VocabLayout(base.text_rows, CODEBOOK), seq_len=SEQ_LEN,
                                text_tokenizer_sha256=tokenizer_fingerprint(base.tokenizer), progress=False)
    yield str(spec), corpus, export, table, sequences
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def calibrated(setup):
    """(base, aligned + calibrated init, layout), made once per LM; tests that change the model copy it."""
    spec, corpus, export, *_ = setup
    return _init(spec, corpus, "aligned", "calibrated", export)


@pytest.fixture(scope="module")
def step0(setup, calibrated):
    """Step-0 diagnostics on the held-out split: the default aligned init ("calibrated": the calibrated head), the
    behaviour before ("tied": the export's rows as input and output rows), the same with the image marker
    ("marked"), and ``mean`` with HF's own mean resizing of the head ("mean")."""
    spec, corpus, export, _, sequences = setup
    _, result, layout = calibrated
    out = {"calibrated": _step0(result, layout, corpus, sequences)}
    for name, mode, head, marker in (("tied", "aligned", "tied", "none"), ("mean", "mean", "tied", "none"),
                                     ("marked", "aligned", "calibrated", "auto")):
        model = _init(spec, corpus, mode, head, export, marker)[1]
        out[name] = _step0(model, layout, corpus, sequences)
        if name == "marked":
            out["marked_rows"] = (_input_weight(model.model)[layout.image_offset:layout.special_offset],
                                  model.provenance["image_marker"])
    return out


def _init(spec, corpus, mode, head, export=None, marker="none"):
    base = load_base_lm(spec)
    items = open_corpus(corpus)
    train, _ = split(items.items, HOLDOUT, 0)
    layout = VocabLayout(base.text_rows, CODEBOOK)
    calibration = calibration_rows(items, train, layout, seq_len=SEQ_LEN, mode="text-to-image")
    request = InitRequest(layout, init_from=export if mode == "aligned" else None,
                          image_tokenizer=items.image_tokenizer, head=head, calibration=calibration, marker=marker)
    return base, initialize(base, mode, request), layout


def _step0(result, layout, corpus, sequences):
    _, held = split(open_corpus(corpus).items, HOLDOUT, 0)
    batches = [SequenceDataset(sequences, held).batch(range(len(held)))]
    return step0_diagnostics(result.model, layout, pretrained=True, heldout_batches=batches,
                             captions=caption_batch(sequences, held))


def _overlap(rows: torch.Tensor, table: torch.Tensor, text: torch.Tensor, k: int = 10) -> float:
    text = torch.nn.functional.normalize(text, dim=1)
    mine = (torch.nn.functional.normalize(rows, dim=1) @ text.T).topk(k).indices
    theirs = (torch.nn.functional.normalize(table, dim=1) @ text.T).topk(k).indices
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(mine, theirs)]))


def _input_weight(model) -> torch.Tensor:
    embedding = model.get_input_embeddings()
    return (embedding.full_weight() if hasattr(embedding, "full_weight") else embedding.weight).detach()


def test_aligned_calibrated_keeps_the_text_side_and_the_fit_neighbours(setup, calibrated, step0):
    table = setup[3]
    _, aligned, layout = calibrated
    ours, before = step0["calibrated"], step0["tied"]
    assert ours["text_kl"]["positions"] > 0 and ours["heldout"]["image_tokens"] > 0
    assert ours["text_kl"]["kl_full"] <= 0.01 and ours["text_kl"]["kl_text"] == 0.0
    assert ours["text_kl"]["kl_full"] < before["text_kl"]["kl_full"]
    weight = _input_weight(aligned.model)
    assert _overlap(weight[layout.image_offset:layout.special_offset], table, weight[:layout.text_rows]) == 1.0
    assert aligned.provenance["image_marker"]["scale"] == 0.0
    assert aligned.provenance["head"] == "calibrated" and set("abwg") <= set(aligned.provenance["output_rows"]["fit"])


def test_marked_rows_keep_the_fit_neighbours_and_the_text_side(setup, step0):
    table = setup[3]
    rows, marker = step0["marked_rows"]
    text = _input_weight(load_base_lm(setup[0]).model)
    assert marker["scale"] > 0 and marker["top10_overlap"] >= 0.9
    assert _overlap(rows, table, text) >= 0.9 - 1e-9
    assert step0["marked"]["text_kl"]["kl_full"] <= 0.01


def test_aligned_calibrated_keeps_the_text_side_the_tied_variant_loses(step0):
    """The behaviour before (aligned rows as output rows) moves the caption positions' predictions; the default
    keeps them within 0.01 nats, as ``mean`` does."""
    ours, tied, mean = step0["calibrated"], step0["tied"], step0["mean"]
    assert ours["text_kl"]["kl_full"] <= 0.01 and mean["text_kl"]["kl_full"] <= 0.01
    assert tied["text_kl"]["kl_full"] > 0.01


def test_aligned_calibrated_starts_image_tokens_no_higher_than_mean(step0):
    ours, mean = step0["calibrated"], step0["mean"]
    assert ours["heldout"]["image_loss"] <= mean["heldout"]["image_loss"], (ours["heldout"]["image_loss"],
                                                                            mean["heldout"]["image_loss"])


def test_calibrated_head_unties_only_the_new_rows_and_is_deterministic(setup, calibrated):
    spec, corpus, export, *_ = setup
    lm = load_base_lm(spec)
    text_in = lm.model.get_input_embeddings().weight.detach().clone()
    text_out = lm.model.get_output_embeddings().weight.detach().clone()
    tied = lm.tied
    _, first, layout = calibrated
    _, second, _ = _init(spec, corpus, "aligned", "calibrated", export)
    model = first.model
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    v = layout.text_rows
    assert not is_tied(model) and model.config.tie_word_embeddings is False
    head_weight = head.full_weight() if hasattr(head, "full_weight") else head.weight
    assert torch.equal(_input_weight(model)[:v], text_in) and torch.equal(head_weight[:v].detach(), text_out)
    if tied:  # the text rows stay one parameter shared by the embedding and the head
        assert head.base is embedding.base and head.new is not embedding.new
    assert torch.count_nonzero(head_weight[layout.used_rows:]) == 0
    second_head = second.model.get_output_embeddings()
    second_weight = second_head.full_weight() if hasattr(second_head, "full_weight") else second_head.weight
    assert torch.equal(head_weight, second_weight)


def test_split_head_merges_to_a_plain_untied_model_with_the_same_logits(calibrated):
    _, result, layout = calibrated
    model = copy.deepcopy(result.model)
    ids = torch.tensor([[layout.special("<doc>"), layout.special("<text>"), 5, 6, layout.image_offset + 3]])
    before = model(input_ids=ids).logits.detach()
    merge_split_rows(model)
    assert isinstance(model.get_output_embeddings(), torch.nn.Linear) and not is_tied(model)
    assert torch.equal(model(input_ids=ids).logits.detach(), before)


def test_new_rows_preset_freezes_the_shared_text_rows(calibrated):
    _, result, layout = calibrated
    model = copy.deepcopy(result.model)
    apply_freeze(model, "new-rows", text_rows=layout.text_rows)
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    assert not embedding.base.requires_grad and not head.base.requires_grad
    assert embedding.new.requires_grad and head.new.requires_grad


def test_tied_head_is_the_behaviour_before(setup):
    spec, corpus, export, *_ = setup
    lm = load_base_lm(spec)
    _, result, layout = _init(spec, corpus, "aligned", "tied", export)
    assert result.provenance["head"] == "tied"
    if lm.tied:
        assert is_tied(result.model)
        assert result.provenance["output_rows"]["rule"].startswith("tied")


def test_zero_head_gives_every_new_id_logit_zero(setup):
    spec, corpus, export, *_ = setup
    _, result, layout = _init(spec, corpus, "aligned", "zero", export)
    ids = torch.tensor([[layout.special("<doc>"), layout.special("<text>"), 5, 6]])
    logits = result.model(input_ids=ids).logits.detach()
    assert torch.count_nonzero(logits[..., layout.text_rows:]) == 0
