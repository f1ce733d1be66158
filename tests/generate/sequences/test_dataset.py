"""The sequence dataset: labels, buckets, deterministic caption dropout, the held-out split."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokalign.align.errors import TokalignError
from tokalign.align.formats.generator_init import VocabLayout
from tokalign.align.lm.captions import tokenizer_fingerprint
from tokalign.generate.sequences.buckets import IMAGE, STRUCTURE, TEXT, bucket_of
from tokalign.generate.sequences.build import build_sequences
from tokalign.generate.sequences.dataset import SequenceDataset, caption_batch, dropped, split


@pytest.fixture
def sequences(synthetic_corpus, lm, tmp_path):
    from tokalign.align.formats.corpus import open_corpus

    corpus = open_corpus(synthetic_corpus())
    layout = VocabLayout(lm.vocab_size, corpus.codebook_size)
    return build_sequences(corpus, tmp_path / "seq", layout, seq_len=40,
                           text_tokenizer_sha256=tokenizer_fingerprint(lm.tokenizer))


def test_labels_ignore_pad_and_buckets_recombine(sequences):
    data = SequenceDataset(sequences)
    batch = data.batch(range(len(data)))
    ids, labels, buckets = batch["input_ids"], batch["labels"], batch["buckets"]
    pad = ids == sequences.layout.pad_id
    assert ids.dtype == torch.long and ids.shape == (len(data), 40)
    assert (labels[pad] == -100).all() and torch.equal(labels[~pad], ids[~pad])
    assert torch.equal(batch["attention_mask"], (~pad).long())
    counts = [int((buckets == b).sum()) for b in (TEXT, IMAGE, STRUCTURE)]
    assert sum(counts) == int((~pad).sum())
    assert counts[0] == int(sequences.caption_lengths.sum()) and counts[1] == 16 * len(data)
    assert counts[2] == 6 * len(data) and (buckets[pad] == -1).all()
    item = data[3]
    assert torch.equal(item["input_ids"], ids[3]) and torch.equal(item["buckets"], buckets[3])


def test_bucket_of_ignores_pad_and_padding_rows(sequences):
    layout = sequences.layout
    ids = np.array([0, layout.text_rows - 1, layout.image_offset, layout.special("<doc>"), layout.pad_id,
                    layout.used_rows, layout.total_rows])
    assert bucket_of(ids, layout).tolist() == [0, 0, 1, 2, -1, -1, -1]
    assert bucket_of(torch.from_numpy(ids), layout).tolist() == [0, 0, 1, 2, -1, -1, -1]


def test_caption_dropout_is_a_pure_function_of_seed_epoch_and_row(sequences):
    a = SequenceDataset(sequences, caption_dropout=0.5, seed=3)
    b = SequenceDataset(sequences, caption_dropout=0.5, seed=3, epoch=0)
    order = np.random.default_rng(0).permutation(len(a))
    assert torch.equal(a.batch(order)["input_ids"], b.batch(order)["input_ids"])
    in_order = a.batch(np.arange(len(a)))["input_ids"]
    assert torch.equal(a.batch(order)["input_ids"], in_order[order])  # the draw follows the row, not the batch
    assert torch.equal(a[int(order[0])]["input_ids"], in_order[order[0]])
    assert 0 < int((in_order[:, 2] == sequences.layout.special("</text>")).sum()) < len(a)
    a.set_epoch(1)
    resumed = SequenceDataset(sequences, caption_dropout=0.5, seed=3)
    resumed.set_epoch(1)
    assert torch.equal(a.batch(range(20, 40))["input_ids"], resumed.batch(range(20, 40))["input_ids"])
    rows = np.arange(10_000)
    assert abs(dropped(3, 0, rows, 0.1).mean() - 0.1) < 0.02
    assert not np.array_equal(dropped(3, 0, rows, 0.5), dropped(3, 1, rows, 0.5))
    assert not np.array_equal(dropped(3, 0, rows, 0.5), dropped(4, 0, rows, 0.5))
    assert np.array_equal(dropped(3, 2, rows[5:9], 0.5), dropped(3, 2, rows, 0.5)[5:9])


def test_a_dropped_caption_leaves_the_empty_text_segment(sequences):
    layout, s = sequences.layout, sequences.layout.special_ids
    data = SequenceDataset(sequences, caption_dropout=1.0, seed=0)
    plain = SequenceDataset(sequences).batch(range(len(data)))["input_ids"]
    ids = data.batch(range(len(data)))["input_ids"]
    for i in range(len(data)):
        c = int(sequences.caption_lengths[i])
        assert ids[i, :4].tolist() == [s["<doc>"], s["<text>"], s["</text>"], s["<image>"]]
        assert torch.equal(ids[i, 3:40 - c], plain[i, 3 + c:])
        assert (ids[i, 40 - c:] == layout.pad_id).all()
    assert int((data.batch(range(len(data)))["buckets"] == TEXT).sum()) == 0


def test_caption_dropout_needs_captions(synthetic_corpus, lm, tmp_path):
    from tokalign.align.formats.corpus import open_corpus

    corpus = open_corpus(synthetic_corpus())
    seqs = build_sequences(corpus, tmp_path / "img", VocabLayout(lm.vocab_size, 64), seq_len=20, mode="image-only")
    with pytest.raises(TokalignError, match="caption-dropout"):
        SequenceDataset(seqs, caption_dropout=0.1)


def test_heldout_split_is_seeded_and_disjoint():
    train, held = split(100, 10, seed=1)
    assert len(held) == 10 and len(train) == 90 and not set(train) & set(held)
    assert np.array_equal(held, split(100, 10, seed=1)[1]) and not np.array_equal(held, split(100, 10, seed=2)[1])


def test_caption_batch_holds_the_captions_alone(sequences):
    ids, mask = caption_batch(sequences, [0, 1, 2])
    for j in range(3):
        n = int(sequences.caption_lengths[j])
        assert int(mask[j].sum()) == n
        assert ids[j, :n].tolist() == sequences.tokens[j, 2:2 + n].tolist()


def test_swapped_caption_batch_keeps_the_images_and_moves_the_captions(sequences):
    from tokalign.generate.sequences.dataset import swapped_caption_batch

    rows = np.array([0, 1, 2, 3])
    own = SequenceDataset(sequences, rows).batch(range(len(rows)))
    assert torch.equal(swapped_caption_batch(sequences, rows, rows)["input_ids"], own["input_ids"])
    donors = np.array([3, 0, 1, 2])
    swapped = swapped_caption_batch(sequences, rows, donors)["input_ids"]
    layout = sequences.layout
    image = lambda ids: ids[(ids >= layout.image_offset) & (ids < layout.special_offset)]  # noqa: E731
    captions, _ = caption_batch(sequences, donors)
    for j in range(len(rows)):
        assert torch.equal(image(swapped[j]), image(own["input_ids"][j]))
        n = int(sequences.caption_lengths[donors[j]])
        assert torch.equal(swapped[j, 2:2 + n], captions[j, :n])
    assert not torch.equal(swapped, own["input_ids"])
