"""The final model folder: a plain Hugging Face folder plus the tokalign record (see
:mod:`tokalign.generate.model_folder`), written atomically with the marker last.

Tokenizer rule: the LM's tokenizer gets one added token per id the layout gives beyond the text rows, in layout
order: ``<image_0>`` .. ``<image_{K-1}>`` (ids ``image_offset + t``), then the seven structure tokens (ids
``special_offset + i``). A tokenizer with fewer entries than the LM's embedding rows is first filled with unused
placeholders, so the new tokens land exactly on the layout's ids; this is checked, not assumed. Padding rows
(ids ``used_rows`` ..) get no token. ``<pad>`` becomes the tokenizer's pad token.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

from tokalign.align.formats import atomic, outputs
from tokalign.align.formats.generator_init import SPECIAL_TOKENS, VocabLayout
from tokalign.generate.model_folder import GeneratorRecord, write_record

log = logging.getLogger(__name__)

LAYOUT_KEY = "tokalign_layout"


def image_token(t: int) -> str:
    return f"<image_{t}>"


def expand_tokenizer(tokenizer, layout: VocabLayout):
    """``tokenizer`` (changed in place) with the image and structure tokens at the layout's ids."""
    have = len(tokenizer)
    if have > layout.text_rows:
        raise ValueError(f"the tokenizer has {have} entries, more than the LM's {layout.text_rows} embedding rows")
    filler = [f"<|tokalign_unused_{i}|>" for i in range(have, layout.text_rows)]
    images = [image_token(t) for t in range(layout.codebook_size)]
    tokenizer.add_tokens(filler + images + list(SPECIAL_TOKENS), special_tokens=True)
    tokenizer.pad_token = "<pad>"
    check_tokenizer(tokenizer, layout)
    return tokenizer


def check_tokenizer(tokenizer, layout: VocabLayout) -> None:
    """Every structure token and the first and last image token have the layout's id."""
    want = dict(layout.special_ids)
    want[image_token(0)] = layout.image_offset
    want[image_token(layout.codebook_size - 1)] = layout.special_offset - 1
    got = {name: tokenizer.convert_tokens_to_ids(name) for name in want}
    if got != want:
        raise AssertionError(f"tokenizer ids {got} differ from the layout's {want}")
    if len(tokenizer) != layout.used_rows:
        raise AssertionError(f"tokenizer holds {len(tokenizer)} entries, the layout uses {layout.used_rows} rows")


def generation_config(model, layout: VocabLayout):
    """The model's generation config with the structure ids and the layout under ``tokalign_layout``."""
    from transformers import GenerationConfig

    config = GenerationConfig.from_model_config(model.config)
    config.bos_token_id = layout.special("<doc>")
    config.eos_token_id = layout.special("</doc>")
    config.pad_token_id = layout.pad_id
    setattr(config, LAYOUT_KEY, layout.to_json())
    return config


def save_model_folder(folder: Path, model, tokenizer, layout: VocabLayout, record: GeneratorRecord,
                      state_dict: dict | None = None) -> Path:
    """Write ``folder`` atomically: weights, config, tokenizer, generation config, then the record.

    ``model`` is a plain ``transformers`` model whose embedding and output layers have ``layout.total_rows`` rows
    (split tables already merged); ``state_dict`` overrides its weights (e.g. gathered from FSDP shards).
    """
    rows = model.get_input_embeddings().weight.shape[0]
    if rows != layout.total_rows:
        raise AssertionError(f"model has {rows} embedding rows, the layout {layout.total_rows}")
    model.config.pad_token_id = layout.pad_id
    model.config.bos_token_id = layout.special("<doc>")
    model.config.eos_token_id = layout.special("</doc>")
    model.generation_config = generation_config(model, layout)
    tokenizer = expand_tokenizer(copy.deepcopy(tokenizer), layout)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # library code does not print
    try:
        with atomic.atomic_dir(folder) as tmp:
            model.save_pretrained(tmp, state_dict=state_dict)
            tokenizer.save_pretrained(tmp)
            outputs.write_marker(tmp, outputs.GENERATOR_MODEL)  # the shared rule: no other writer lands in here
            write_record(tmp, record)
            if _merge_into_existing(tmp, Path(folder)):
                raise _Merged
    except _Merged:
        pass
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    log.info("saved the generator to %s", folder)
    return Path(folder)


class _Merged(Exception):
    """The new files went into the existing folder (which keeps what the save does not write)."""


def _merge_into_existing(tmp: Path, folder: Path) -> bool:
    """When ``folder`` exists and holds entries the save does not write (a probe or samples folder, the user's
    files), move the new files into it instead of replacing it: the record first goes (the folder reads as
    incomplete), then each file (atomic renames), the record last.  Returns whether it merged."""
    import os

    if not folder.is_dir():
        return False
    new = set(os.listdir(tmp))
    kept = [name for name in outputs.user_entries(folder) if name not in new]
    if not kept:
        return False
    log.info("keeping %s in %s (not written by the save)", ", ".join(sorted(kept)[:3]), folder)
    from tokalign.generate.model_folder import MARKER

    (folder / MARKER).unlink(missing_ok=True)
    for name in sorted(new - {MARKER}):
        if (folder / name).is_dir() and not (folder / name).is_symlink():
            continue  # the save writes files only; a folder of that name is not replaced
        os.replace(tmp / name, folder / name)
    os.replace(tmp / MARKER, folder / MARKER)
    return True
