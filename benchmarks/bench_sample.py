"""Sampling speed: tokalign's fast path against its previous path and ``transformers``' ``generate``, one run.

All paths sample the same randomly initialised LLaMA (the expanded vocabulary: text rows + image rows +
structure tokens), the same prompts, classifier-free guidance and the image-id constraint:

* fast: :class:`tokalign.generate.sample.fast_sampler.FastSampler`: static KV cache, image-row logits only, the
  decode step captured in a CUDA graph on CUDA (its warm-up + capture time is printed apart);
* previous: :func:`tokalign.generate.sample.sampler.sample_image_ids`: HF forward per step with a DynamicCache,
  conditional and unconditional rows in one batch (the reference the fast path is tested against);
* transformers: ``model.generate(do_sample=True, guidance_scale=s, negative_prompt_ids=...)`` with the same
  image-id mask as a ``LogitsProcessor``.

The fast path runs the full shape (``--images`` x grid tokens); the peers, too slow for that on a GPU, run
``--peer-images`` x ``--peer-steps`` and the fast path runs that shape too, so every ratio compares one shape
measured in this run. Printed per path: seconds, ms per decoding step, images/s, and the fast path's token
agreement with the previous path (identical in float32; bf16 may differ where two ids are nearly tied).
Imports neither faiss, gguf, open_clip nor diffusers.

    python benchmarks/bench_sample.py --shape demo                           # the demo's generator, CPU
    python benchmarks/bench_sample.py --shape smollm2 --device cuda          # 64 images x 1,024 tokens, cfg
    python benchmarks/bench_sample.py --shape smollm2 --device cuda --quick  # about a minute
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from tokalign.align.formats.generator_init import VocabLayout
from tokalign.generate.sample import prefix as px
from tokalign.generate.sample.constraint import check_image_ids, image_bias
from tokalign.generate.sample.fast_sampler import FastSampler
from tokalign.generate.sample.sampler import Settings, sample_image_ids
from tokalign.generate.sample.seeds import uniforms

SHAPES = {  # d_model, ffn, layers, heads, kv heads, text rows, codebook, grid side, images
    "tiny": dict(hidden=64, ffn=128, layers=2, heads=4, kv=2, text_rows=512, codebook=256, grid=16, images=8),
    "demo": dict(hidden=576, ffn=1536, layers=4, heads=9, kv=3, text_rows=49152, codebook=16384, grid=6, images=2),
    "smollm2": dict(hidden=576, ffn=1536, layers=30, heads=9, kv=3, text_rows=49152, codebook=16384, grid=32,
                    images=64),
}


def build_model(shape: dict, device: str, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM

    layout = VocabLayout(shape["text_rows"], shape["codebook"])
    config = LlamaConfig(vocab_size=layout.total_rows, hidden_size=shape["hidden"], intermediate_size=shape["ffn"],
                         num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                         num_key_value_heads=shape["kv"], max_position_embeddings=2048, tie_word_embeddings=True,
                         rope_theta=100000.0, pad_token_id=layout.pad_id, attn_implementation="sdpa")
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(device=device, dtype=dtype).eval()
    return model, layout


def prompts(layout: VocabLayout, count: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, 13, (count,), generator=g).tolist()
    return [px.text_prefix(torch.randint(0, layout.text_rows, (n,), generator=g).tolist(), layout) for n in lengths]


def run_fast(sampler: FastSampler, layout, prefixes, steps, scale):
    return sampler(prefixes, steps=steps, uniforms=uniforms(list(range(len(prefixes))), steps),
                   unconditional=px.unconditional_prefix(layout))


def run_previous(model, layout, prefixes, steps, scale):
    return sample_image_ids(model, prefixes, layout=layout, steps=steps,
                            uniforms=uniforms(list(range(len(prefixes))), steps), settings=Settings(cfg_scale=scale),
                            unconditional=px.unconditional_prefix(layout))


def run_transformers(model, layout, prefixes, steps, scale):
    from transformers import LogitsProcessor, LogitsProcessorList

    device = next(model.parameters()).device
    bias = image_bias(layout, device)

    class ImageOnly(LogitsProcessor):
        def __call__(self, input_ids, scores):
            return scores + bias.to(scores.dtype)

    batch = px.left_pad(prefixes, layout.pad_id)
    uncond = torch.tensor([px.unconditional_prefix(layout)] * len(prefixes), device=device)
    kwargs = dict(guidance_scale=scale, negative_prompt_ids=uncond,
                  negative_prompt_attention_mask=torch.ones_like(uncond)) if scale != 1 else {}
    with torch.inference_mode():
        out = model.generate(input_ids=batch.ids.to(device), attention_mask=batch.attention_mask.to(device),
                             do_sample=True, max_new_tokens=steps, min_new_tokens=steps, top_k=0, top_p=1.0,
                             temperature=1.0, logits_processor=LogitsProcessorList([ImageOnly()]),
                             pad_token_id=layout.pad_id, eos_token_id=None, **kwargs)
    return out[:, batch.ids.shape[1]:]


def timed(fn, *args, device: str):
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    result = fn(*args)
    sync()
    return result, time.perf_counter() - start


def best_of(repeats: int, fn, layout, prefixes, steps, scale, device, name):
    """(tokens, best seconds) over ``repeats`` timed runs, each output checked for shape and image ids."""
    best, ids = float("inf"), None
    for _ in range(repeats):
        ids, seconds = timed(fn, layout, prefixes, steps, scale, device=device)
        if tuple(ids.shape) != (len(prefixes), steps):
            raise SystemExit(f"{name}: got tokens of shape {tuple(ids.shape)}, expected ({len(prefixes)}, {steps})")
        check_image_ids(ids, layout)
        best = min(best, seconds)
    return ids, best


def report(name: str, images: int, steps: int, seconds: float) -> float:
    rate = images / seconds
    print(f"{name:>22}: {images:3d} images x {steps:4d} tokens  {seconds:8.2f} s  {1000 * seconds / steps:8.2f} ms/step"
          f"  {rate:8.2f} images/s")
    return rate


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--images", type=int, default=None, help="Images of the full shape [default: the shape's].")
    parser.add_argument("--grid", type=int, default=None, help="Grid side; grid^2 image tokens [default: the shape's].")
    parser.add_argument("--peer-images", type=int, default=None, help="Images for the peers [default: min(images, 8)].")
    parser.add_argument("--peer-steps", type=int, default=None,
                        help="Tokens per image for the peers [default: all on cpu, at most 128 on cuda; 64 with --quick].")
    parser.add_argument("--cfg-scale", type=float, default=3.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="[default: bfloat16 on cuda, float32 on cpu]")
    parser.add_argument("--fast-dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                        help="The fast path's dtype [default: what generator sample picks: bfloat16 on a CPU with "
                             "native bf16, else --dtype]; the other paths run --dtype.")
    parser.add_argument("--repeats", type=int, default=3,
                        help="Timed runs of the fast path, the best counts (peers: the same on cpu, 1 on cuda).")
    parser.add_argument("--quick", action="store_true", help="One timed run per path, peers at 64 tokens (~1 min on "
                        "a GPU for --shape smollm2).")
    parser.add_argument("--no-graphs", action="store_true", help="Fast path without CUDA graphs (eager static cache).")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's].")
    parser.add_argument("--skip-transformers", action="store_true")
    return parser.parse_args()


def fast_dtype(args, dtype: torch.dtype) -> torch.dtype:
    """The fast path's dtype: ``--fast-dtype``, or what ``generator sample --dtype auto`` picks on this device."""
    if args.fast_dtype != "auto":
        return getattr(torch, args.fast_dtype)
    from tokalign.generate.sample.loading import sampling_dtype

    if args.device.startswith("cuda"):
        return dtype
    return getattr(torch, sampling_dtype("auto", "cpu", SHAPES[args.shape]["hidden"]))


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = dict(SHAPES[args.shape])
    images, side = args.images or shape["images"], args.grid or shape["grid"]
    steps = side * side
    cuda = args.device.startswith("cuda")
    repeats = 1 if args.quick else args.repeats
    peer_repeats = 1 if args.quick or cuda else repeats
    peer_images = args.peer_images or min(images, 8)
    peer_steps = args.peer_steps or (min(steps, 64) if args.quick else min(steps, 128) if cuda else steps)
    dtype = getattr(torch, args.dtype or ("bfloat16" if cuda else "float32"))
    model, layout = build_model(shape, args.device, dtype)
    quick_model = model if fast_dtype(args, dtype) == dtype else copy.deepcopy(model).to(fast_dtype(args, dtype))
    full, peer = prompts(layout, images), prompts(layout, peer_images)
    scale, graphs = args.cfg_scale, not args.no_graphs
    print(f"shape {args.shape}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, vocabulary "
          f"{layout.total_rows}, cfg {scale} ({2 if scale != 1 else 1} rows per image), {args.device} {dtype} "
          f"(fast path {fast_dtype(args, dtype)}), {torch.get_num_threads()} threads, best of {repeats} "
          f"(peers {peer_repeats}), CUDA graphs {'on' if graphs and cuda else 'off'}")
    settings = Settings(cfg_scale=scale)
    same = (peer_images, peer_steps) == (images, steps)
    fast_full = FastSampler(quick_model, layout, settings, graphs=graphs)
    fast_peer = fast_full if same else FastSampler(quick_model, layout, settings, graphs=graphs)
    fast = lambda sampler: (lambda layout, p, s, c: run_fast(sampler, layout, p, s, c))  # noqa: E731
    for name, sampler, prefixes, n in [("full", fast_full, full, steps)] + ([] if same else [
            ("peer", fast_peer, peer, peer_steps)]):
        _, first = timed(fast(sampler), layout, prefixes, n, scale, device=args.device)  # allocates, captures
        print(f"{'fast first call':>22}: {name} shape {first:.2f} s, of which warm-up + graph capture "
              f"{sampler.capture_seconds:.2f} s")
    peers = {"previous": run_previous} | ({} if args.skip_transformers else {"transformers": run_transformers})
    if quick_model is not model:
        exact = FastSampler(model, layout, settings, graphs=graphs)
        peers = {f"fast {str(dtype)[6:]}": lambda m, *a: run_fast(exact, *a)} | peers
    for fn in peers.values():  # warm-up
        fn(model, layout, peer[:2], min(peer_steps, 8), scale)
    fast_full_s = None if same else best_of(repeats, fast(fast_full), layout, full, steps, scale, args.device, "fast")[1]
    fast_ids, fast_s = best_of(repeats, fast(fast_peer), layout, peer, peer_steps, scale, args.device, "fast")
    measured = {name: best_of(peer_repeats, lambda *a, fn=fn: fn(model, *a), layout, peer, peer_steps, scale,
                              args.device, name) for name, fn in peers.items()}
    print()
    if fast_full_s is not None:
        report("fast (full shape)", images, steps, fast_full_s)
    if args.shape == "smollm2" and (images, steps) == (64, 1024):
        print(f"{'target':>22}: {fast_full_s or fast_s:.2f} s for 64 images x 1,024 tokens with cfg (<= 10 s on an "
              "H100/H200)")
    rate = report("fast", peer_images, peer_steps, fast_s)
    rates = {name: report(name, peer_images, peer_steps, seconds) for name, (_, seconds) in measured.items()}
    tokens = {"fast": fast_ids} | {name: ids for name, (ids, _) in measured.items() if name != "transformers"}
    for a, b in [(a, "previous") for a in tokens if a != "previous"]:
        agree = (tokens[a].cpu() == tokens[b].cpu()).float().mean().item()
        print(f"{'token agreement':>22}: {a} vs {b} {100 * agree:.2f}% (same uniforms; a dtype other than the "
              f"reference's flips near-ties and the rows then diverge)")
    for name, peer_rate in rates.items():
        print(f"{'ratio':>22}: {rate / peer_rate:.2f}x (fast / {name}, {peer_images} images x {peer_steps} tokens)")


if __name__ == "__main__":
    main()
