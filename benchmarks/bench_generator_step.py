"""Generator training throughput: this project's step against a plain Hugging Face ``Trainer``, same run.

Both train the SmolLM2-135M shape (hidden 576, 30 layers, 9 heads / 3 KV heads, FFN 1,536, tied embeddings) with
the generator's expanded vocabulary (65,600 rows) from random weights on the same random caption -> image
sequences (``<doc> <text> caption </text> <image> 1,024 image tokens </image> </doc>`` padded to 1,152), the same
micro-batch, gradient accumulation and AdamW. Each side gets its own default precision and optimizer kernel: on a
GPU both run bf16 autocast with fused AdamW; on a CPU the Trainer runs float32 with ``adamw_torch`` (its defaults),
ours runs what ``--precision auto`` resolves to (bf16 autocast where the CPU has native bf16 and the model is at
least 256 wide: float32 weights, loss and optimizer) with the fused AdamW (``--precision fp32`` for float32;
``--trainer-bf16`` gives the Trainer bf16 autocast too). The step is the training loop's own (:func:`~tokalign.generate.train.step.train_step`: the chunked linear +
cross-entropy, the deferred finiteness check on a GPU: no host synchronization per step). The timed window
excludes the first ``--warmup`` steps. Printed: tokens/s (all positions; useful non-pad tokens beside), MFU on a
GPU with a known peak, peak GPU memory, and the ratio. ``--compile`` adds a row for the step with the decoder
layers (and, on a GPU, the loss's chunk math) compiled, with the first step's time and the compile time (first
step minus a steady step). ``--size quick`` cuts the timed steps for a short GPU budget. ``--rounds N`` runs ours and
the Trainer alternately N times (for a shared, loaded machine) and prints the median ratio. Only torch,
transformers and accelerate are imported (no faiss, gguf, diffusers or open_clip: GPU machines may lack them).

    python benchmarks/bench_generator_step.py --size quick --compile                 # full shape (GPU), ~90 s
    python benchmarks/bench_generator_step.py --device cpu --layers 2 --micro-batch 1 --batch 2 --steps 3 --rounds 2
"""

from __future__ import annotations

import argparse
import gc
import time

import numpy as np
import torch

from tokalign.align.formats.generator_init import VocabLayout
from tokalign.generate.sequences.buckets import bucket_of
from tokalign.generate.train.compiling import compile_model
from tokalign.generate.train.finite_guard import FiniteGuard
from tokalign.generate.train.optim import fused_adamw
from tokalign.generate.train.step import LossOptions, MicroBatch, loss_options, train_step
from tokalign.generate.train.throughput import device_peak_flops, model_shape

LAYOUT = VocabLayout(49152, 16384)  # SmolLM2's text rows + a MoVQ-sized codebook -> 65,600 rows
SIZES = {"full": {}, "quick": {"steps": 4, "warmup": 1}}  #: --size: overrides of --steps / --warmup


def build_model(layers: int, seq_len: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=LAYOUT.total_rows, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=layers, num_attention_heads=9, num_key_value_heads=3,
                         max_position_embeddings=max(2048, seq_len), rope_theta=100000.0, tie_word_embeddings=True,
                         rms_norm_eps=1e-5, attn_implementation="sdpa")
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def sequences(n: int, seq_len: int, image_tokens: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    s = LAYOUT.special_ids
    rows = np.full((n, seq_len), LAYOUT.pad_id, dtype=np.int64)
    for i in range(n):
        caption = rng.integers(0, LAYOUT.text_rows, size=rng.integers(10, 40))
        image = rng.integers(0, LAYOUT.codebook_size, size=image_tokens) + LAYOUT.image_offset
        row = [s["<doc>"], s["<text>"], *caption, s["</text>"], s["<image>"], *image, s["</image>"], s["</doc>"]]
        rows[i, :len(row)] = row[:seq_len]
    return rows


def bench_ours(args, rows: np.ndarray, compiled: bool = False) -> dict:
    from tokalign.align.training.accelerator import build_accelerator

    acc = build_accelerator(args.device, mixed_precision="bf16" if args.bf16 else "no")
    model = build_model(args.layers, args.seq_len)
    shape = model_shape(model)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                                  lr=3e-4, betas=(0.9, 0.95), fused=fused_adamw(acc.device) or None)
    base = loss_options(args.precision, acc.device, model)
    comp = compile_model(model, acc.device, loss=base) if compiled else None
    model, optimizer = acc.prepare(model, optimizer)
    model.train()
    params = list(model.parameters())
    guard = FiniteGuard.for_run(optimizer, acc.device)
    batches = _micro_batches(args, rows, acc.device)

    def step(i: int, loss: LossOptions):
        return train_step(acc, model, optimizer, params, batches, step=i, lr=3e-4, grad_clip=1.0, guard=guard,
                          loss=loss)

    _reset_memory(acc.device)
    first = 0
    if comp is not None:
        comp.first_step(lambda loss: step(0, loss), optimizer, acc.device)
        first = 1
    options = comp.options if comp is not None else base
    start = None
    for i in range(first, args.warmup + args.steps):
        if i == args.warmup:
            _sync(acc.device)
            start = time.perf_counter()
        step(i, options)
    guard.check()
    _sync(acc.device)
    out = _figures(time.perf_counter() - start, args, rows, shape, acc.device)
    out["precision"] = "bf16" if args.bf16 or options.cpu_bf16 else "fp32"
    if comp is not None:
        out["first_step_s"] = comp.first_seconds
        out["compile_s"] = comp.first_seconds - out["seconds"] / args.steps
        out["compile_failed"] = comp.failed
    del model, optimizer, params, batches
    _free(acc.device)
    return out


def _micro_batches(args, rows: np.ndarray, device) -> list[MicroBatch]:
    tokens = torch.from_numpy(rows)
    batches = []
    for lo in range(0, args.batch, args.micro_batch):
        t = tokens[lo:lo + args.micro_batch]
        b = bucket_of(t, LAYOUT)
        batches.append(MicroBatch(t.to(device), b.to(device), int((t != LAYOUT.pad_id).sum()),
                                  int((b[:, 1:] >= 0).sum())))
    return batches


def bench_trainer(args, rows: np.ndarray) -> dict:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    model = build_model(args.layers, args.seq_len)
    shape = model_shape(model)
    tokens = torch.from_numpy(rows)
    labels = tokens.masked_fill(bucket_of(tokens, LAYOUT) < 0, -100)

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 1 << 20

        def __getitem__(self, i):
            j = i % args.batch
            return {"input_ids": tokens[j], "labels": labels[j]}

    class Clock(TrainerCallback):
        start = end = None

        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == args.warmup:
                _sync(device)
                Clock.start = time.perf_counter()

        def on_train_end(self, a, state, control, **kw):
            _sync(device)
            Clock.end = time.perf_counter()

    device = torch.device("cuda" if args.device != "cpu" and torch.cuda.is_available() else "cpu")
    targs = TrainingArguments(output_dir="/tmp/bench-generator-trainer", per_device_train_batch_size=args.micro_batch,
                              gradient_accumulation_steps=args.batch // args.micro_batch,
                              max_steps=args.warmup + args.steps, learning_rate=3e-4, adam_beta1=0.9,
                              adam_beta2=0.95, weight_decay=0.1, max_grad_norm=1.0, lr_scheduler_type="constant",
                              bf16=args.bf16 or args.trainer_bf16, use_cpu=device.type == "cpu", report_to=[],
                              save_strategy="no",
                              logging_strategy="no", eval_strategy="no", disable_tqdm=True, dataloader_num_workers=0,
                              optim="adamw_torch_fused" if device.type == "cuda" else "adamw_torch",
                              torch_compile=args.compile_trainer, seed=0)
    _reset_memory(device)
    trainer = Trainer(model=model, args=targs, train_dataset=Data(), callbacks=[Clock()])
    trainer.train()
    out = _figures(Clock.end - Clock.start, args, rows, shape, device)
    out["precision"] = "bf16" if args.bf16 or args.trainer_bf16 else "fp32"
    del trainer, model
    _free(device)
    return out


def _figures(seconds: float, args, rows: np.ndarray, shape, device) -> dict:
    tokens = args.steps * args.batch * args.seq_len
    useful = args.steps * int((rows != LAYOUT.pad_id).sum())
    out = {"tokens_per_s": tokens / seconds, "useful_tokens_per_s": useful / seconds, "seconds": seconds, "mfu": None,
           "peak_gib": torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None}
    peak = device_peak_flops(device)
    if peak:
        out["mfu"] = tokens * shape.flops_per_token(args.seq_len) / seconds / peak
    return out


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_memory(device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _free(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _line(name: str, r: dict, steps: int) -> str:
    mfu = f"   MFU {r['mfu']:.1%}" if r["mfu"] is not None else ""
    mem = f"   peak {r['peak_gib']:.1f} GiB" if r["peak_gib"] is not None else ""
    text = (f"{name:>14} ({r['precision']}): {r['tokens_per_s']:>10,.0f} tokens/s "
            f"({r['useful_tokens_per_s']:,.0f} useful)   "
            f"{r['seconds'] / steps:.3f} s/step{mfu}{mem}")
    if "compile_s" in r:
        text += f"   first step {r['first_step_s']:.1f} s, compile ~{r['compile_s']:.1f} s"
        text += f" (FAILED, ran eager: {r['compile_failed']})" if r["compile_failed"] else ""
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--seq-len", type=int, default=1152)
    p.add_argument("--image-tokens", type=int, default=1024)
    p.add_argument("--micro-batch", type=int, default=16, help="sequences per forward")
    p.add_argument("--batch", type=int, default=64, help="sequences per optimizer step (accumulated)")
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--size", choices=tuple(SIZES), default="full", help="quick: 4 timed steps after 1 warm-up")
    p.add_argument("--compile", action="store_true", help="also time the step with torch.compile (and print its "
                   "compile time)")
    p.add_argument("--compile-trainer", action="store_true", help="torch_compile=True for the Trainer too")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto", help="ours (as `generator "
                   "train --precision`; on a GPU both sides run bf16)")
    p.add_argument("--trainer-bf16", action="store_true", help="bf16 autocast for the Trainer on a CPU too")
    p.add_argument("--rounds", type=int, default=1, help="run ours and the Trainer alternately N times; median ratio")
    p.add_argument("--only", choices=("ours", "compiled", "trainer"), default=None)
    args = p.parse_args()
    for key, value in SIZES[args.size].items():
        setattr(args, key, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = args.device != "cpu" and torch.cuda.is_available()
    args.bf16 = gpu or args.precision == "bf16"
    if args.batch % args.micro_batch:
        p.error("--batch must be a multiple of --micro-batch")
    rows = sequences(args.batch, args.seq_len, args.image_tokens)
    where = torch.cuda.get_device_name() if gpu else f"CPU ({torch.get_num_threads()} threads)"
    flops = model_shape(build_model(args.layers, args.seq_len)).flops_per_token(args.seq_len)
    print(f"SmolLM2-135M shape, {args.layers} layers, vocab {LAYOUT.total_rows:,}, seq {args.seq_len}, micro-batch "
          f"{args.micro_batch}, {args.batch} sequences/step, on {where}; "
          f"{flops / 1e9:.2f} GFLOP/token; torch {torch.__version__}", flush=True)
    runs = [("ours", lambda: bench_ours(args, rows))]
    if args.compile:
        runs.append(("ours compiled", lambda: bench_ours(args, rows, compiled=True)))
    runs.append(("trainer", lambda: bench_trainer(args, rows)))
    ratios: dict[str, list[float]] = {}
    for round_ in range(args.rounds):
        if args.rounds > 1:
            print(f"round {round_ + 1}/{args.rounds}", flush=True)
        results = {}
        for name, bench in runs:
            if args.only in (None, name.replace("ours ", "")):
                results[name] = bench()
                print(_line(name, results[name], args.steps), flush=True)
        if "trainer" in results:
            peer = results["trainer"]["tokens_per_s"]
            for name in ("ours", "ours compiled"):
                if name in results:
                    ratios.setdefault(name, []).append(results[name]["tokens_per_s"] / peer)
                    print(f"   ratio: {name} {ratios[name][-1]:.2f}x the plain Trainer", flush=True)
    if args.rounds > 1:
        for name, values in ratios.items():
            print(f"median ratio over {len(values)} rounds: {name} {float(np.median(values)):.2f}x the plain Trainer "
                  f"({', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
