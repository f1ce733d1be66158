"""What the init alone does: step-0 held-out losses, text KL and neighbour overlap for several inits of one LM.

    .venv/bin/python benchmarks/step0_inits.py --corpus data/shapes --lm smollm2-135m \
        --init-from runs/fit/generator_init.safetensors --sequences runs/step0/sequences

Each arm (``--arm init:head:marker``, repeatable; default: the table of the README's step-0 section) loads the LM
afresh, expands it with ``initialize`` (what ``generator train`` runs before step 0, calibration on training
items) and scores it with ``step0_diagnostics`` on the held-out split: image, text and structure loss over
``--sequences-scored`` held-out sequences, KL(base || expanded) over ``--captions-scored`` held-out captions, and
the top-10 neighbour overlap of the new image input rows with the export's rows (``aligned`` arms). Prints one
markdown table; nothing is written except the sequence folder (``--sequences``, reused when it is there).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from tokalign.align.formats.corpus import open_corpus
from tokalign.align.formats.generator_init import VocabLayout, read_generator_init
from tokalign.align.lm.captions import tokenizer_fingerprint
from tokalign.generate.model.base import load_base_lm
from tokalign.generate.model.diagnostics import step0_diagnostics
from tokalign.generate.model.heads import calibration_rows
from tokalign.generate.model.image_marker import top_k_overlap
from tokalign.generate.model.init_modes import InitRequest, initialize
from tokalign.generate.sequences.build import build_sequences
from tokalign.generate.sequences.dataset import SequenceDataset, caption_batch, split

DEFAULT_ARMS = ("aligned:calibrated:auto", "aligned:calibrated:none", "aligned:tied:none", "random-rows:calibrated:none",
                "mean:calibrated:none", "mean:tied:none")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--lm", required=True)
    p.add_argument("--init-from", help="generator-init export (needed by aligned arms)")
    p.add_argument("--sequences", required=True, help="sequence folder (built here if missing)")
    p.add_argument("--seq-len", type=int, default=1152)
    p.add_argument("--holdout", type=int, default=64)
    p.add_argument("--sequences-scored", type=int, default=4)
    p.add_argument("--captions-scored", type=int, default=32)
    p.add_argument("--num-layers", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--arm", action="append", help="init:head:marker (repeatable)")
    args = p.parse_args()
    torch.manual_seed(0)
    corpus = open_corpus(args.corpus)
    train, held = split(corpus.items, args.holdout, args.seed)
    rows = []
    for arm in args.arm or DEFAULT_ARMS:
        mode, head, marker = arm.split(":")
        start = time.perf_counter()
        base = load_base_lm(args.lm, num_layers=args.num_layers)
        layout = VocabLayout(base.text_rows, corpus.codebook_size)
        sha = tokenizer_fingerprint(base.tokenizer)
        sequences = build_sequences(corpus, args.sequences, layout, seq_len=args.seq_len, text_tokenizer_sha256=sha,
                                    progress=False)
        calibration = calibration_rows(corpus, train, layout, seq_len=args.seq_len, mode="text-to-image",
                                       text_tokenizer_sha256=sha)
        request = InitRequest(layout, seed=args.seed, init_from=args.init_from if mode == "aligned" else None,
                              image_tokenizer=corpus.image_tokenizer, head=head, calibration=calibration, marker=marker)
        result = initialize(base, mode, request)
        scored = held[:args.sequences_scored]
        batches = [SequenceDataset(sequences, scored).batch([j]) for j in range(len(scored))]
        with torch.no_grad():
            d = step0_diagnostics(result.model, layout, pretrained=result.pretrained, heldout_batches=batches,
                                  captions=caption_batch(sequences, held[:args.captions_scored]))
        ov = float("nan")
        if mode == "aligned":
            emb = result.model.get_input_embeddings()
            weight = (emb.full_weight() if hasattr(emb, "full_weight") else emb.weight).detach()
            export = read_generator_init(args.init_from)
            ov = top_k_overlap(weight[layout.image_offset:layout.special_offset], export.image_rows,
                               weight[:layout.text_rows])
        kl = d.get("text_kl", {})
        rows.append((arm, d["heldout"].get("text_loss"), d["heldout"].get("image_loss"), kl.get("kl_full"),
                     kl.get("non_text_mass"), ov, time.perf_counter() - start,
                     result.provenance.get("image_marker", {}).get("scale")))
        print(f"{arm}: {rows[-1][1:]}", flush=True)
    print(f"\nheld-out: {len(held[:args.sequences_scored])} sequences, {len(held[:args.captions_scored])} captions; "
          f"uniform image loss ln {corpus.codebook_size} = {np.log(corpus.codebook_size):.2f}")
    print("| init:head:marker | text loss | image loss | KL caption positions | non-text mass | top-10 overlap | "
          "marker scale |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for arm, text, image, kl, mass, ov, _, scale in rows:
        f = lambda x, spec: "-" if x is None or x != x else format(x, spec)  # noqa: E731
        print(f"| `{arm}` | {f(text, '.2f')} | {f(image, '.2f')} | {f(kl, '.4f')} | {f(mass, '.4f')} | "
              f"{f(ov, '.3f')} | {f(scale, '.3f')} |")


if __name__ == "__main__":
    main()
