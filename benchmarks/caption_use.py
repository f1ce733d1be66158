"""How much a trained generator uses its captions: held-out image loss after the pair's own caption, after another
held-out pair's caption, and after none.

    .venv/bin/python benchmarks/caption_use.py --run runs/demo-generator

Reads the run folder ``generator train`` wrote (its ``model`` and ``sequences``) and the held-out split of the run
(``--holdout``, ``--seed``: the values the run was trained with; the demo's are 64 and 0). Every image is scored three
times with the same image tokens: after its own caption; after the caption of the next held-out pair (a wrong
caption of the same kind: what the loss is when the caption carries no information about this image); and with the
caption dropped (the empty text segment classifier-free guidance conditions on). ``other - own`` is what the caption
is worth per image token; times the tokens per image, per image. A generator that ignores its captions scores the
three alike. Prints one markdown table; writes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from tokalign.generate.model.diagnostics import heldout_losses
from tokalign.generate.sample.loading import load_generator
from tokalign.generate.sequences.build import open_sequences
from tokalign.generate.sequences.dataset import SequenceDataset, split, swapped_caption_batch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, type=Path, help="run folder of `tokalign generator train`")
    p.add_argument("--holdout", type=int, default=64, help="the run's --holdout")
    p.add_argument("--seed", type=int, default=0, help="the run's --seed")
    p.add_argument("--pairs", type=int, default=64, help="held-out pairs scored (at most --holdout)")
    args = p.parse_args()
    torch.manual_seed(0)
    generator = load_generator(args.run / "model", device="cpu", dtype="float32")
    sequences = open_sequences(args.run / "sequences")
    if sequences.mode != "text-to-image":
        raise SystemExit(f"{args.run} was trained on {sequences.mode} sequences: there are no captions to swap")
    _, held = split(len(sequences), args.holdout, args.seed)
    held = held[:args.pairs]
    batches = {"own caption": SequenceDataset(sequences, held).batch(range(len(held))),
               "another pair's caption": swapped_caption_batch(sequences, held, np.roll(held, -1)),
               "no caption": SequenceDataset(sequences, held, caption_dropout=1.0).batch(range(len(held)))}
    losses = {name: heldout_losses(generator.model, [batch], sequences.layout)["image_loss"]
              for name, batch in batches.items()}
    own = losses["own caption"]
    tokens = int(((batches["own caption"]["input_ids"] >= sequences.layout.image_offset)
                  & (batches["own caption"]["input_ids"] < sequences.layout.special_offset)).sum(1)[0])
    print(f"{args.run}: {len(held)} held-out pairs, {tokens} image tokens each")
    print("| image tokens after | held-out image loss (nats/token) | minus own caption (per token) | per image |")
    print("|---|---:|---:|---:|")
    for name, value in losses.items():
        print(f"| {name} | {value:.4f} | {value - own:+.4f} | {(value - own) * tokens:+.2f} |")


if __name__ == "__main__":
    main()
