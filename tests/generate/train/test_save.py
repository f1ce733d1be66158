"""The final model folder: plain ``transformers`` loads it and gives the trained model's logits exactly."""

from __future__ import annotations

import json

import pytest
import torch

from tokalign.align.formats.generator_init import SPECIAL_TOKENS
from tokalign.generate.model_folder import read_record
from tokalign.generate.train.build import prepare
from tokalign.generate.train.save import image_token, save_model_folder


@pytest.fixture
def accelerator():
    from tokalign.align.training.accelerator import build_accelerator

    return build_accelerator("cpu")


@pytest.mark.parametrize("train_only", ["all", "new-rows"])
def test_saved_folder_loads_with_identical_logits(make_config, accelerator, tmp_path, train_only):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = make_config(model={"train_only": train_only})
    prepared = prepare(config, accelerator)
    model = prepared.model
    with torch.no_grad():  # the new rows as training would leave them: moved away from their init
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    tokens = torch.from_numpy(prepared.source.arrays(prepared.holdout_items[:4], 0, False)[0]).long()
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=tokens).logits
    folder = save_model_folder(tmp_path / "model", prepared.finalize(model), prepared.tokenizer, prepared.layout,
                               prepared.record)
    loaded = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        got = loaded(input_ids=tokens).logits
    assert torch.equal(got, expected)
    assert loaded.get_input_embeddings().weight.shape[0] == prepared.layout.total_rows

    layout = prepared.layout
    tokenizer = AutoTokenizer.from_pretrained(folder)
    for name in SPECIAL_TOKENS:
        assert tokenizer.convert_tokens_to_ids(name) == layout.special(name)
    assert tokenizer.convert_tokens_to_ids(image_token(5)) == layout.image_offset + 5
    assert len(tokenizer) == layout.used_rows and tokenizer.pad_token_id == layout.pad_id
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["tokalign_layout"] == layout.to_json() and generation["pad_token_id"] == layout.pad_id
    record = read_record(folder)
    assert record.layout == layout and record.seq_len == 32 and record.grid == (4, 4)


def test_the_original_tokenizer_is_left_unchanged(make_config, accelerator, tmp_path):
    prepared = prepare(make_config(), accelerator)
    before = len(prepared.tokenizer)
    save_model_folder(tmp_path / "m", prepared.finalize(prepared.model), prepared.tokenizer, prepared.layout, prepared.record)
    assert len(prepared.tokenizer) == before


def test_no_other_writer_may_put_a_file_into_a_saved_model_folder(make_config, accelerator, tmp_path):
    from tokalign.align.errors import TokalignError
    from tokalign.align.formats import outputs

    prepared = prepare(make_config(), accelerator)
    folder = save_model_folder(tmp_path / "m", prepared.finalize(prepared.model), prepared.tokenizer, prepared.layout,
                               prepared.record)
    assert outputs.folder_kind(folder) == outputs.GENERATOR_MODEL
    weights = next(folder.glob("*.safetensors"))
    with pytest.raises(TokalignError, match="generator-model"):
        outputs.check_output_file(weights, "tokalign-generator-init")  # e.g. `export --out MODEL/model.safetensors`
