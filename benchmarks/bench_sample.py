"""Sampling speed: tokalign's sampler against ``transformers``' ``generate`` with guidance and a constraint.

Both paths run on the same randomly initialised model, the same prompts and the same settings in one run:

* tokalign: :func:`tokalign.generate.sample.sampler.sample_image_ids`: conditional and unconditional rows as
  one batch of 2B, one forward per step, KV cache, the precomputed image-id mask;
* transformers: ``model.generate(do_sample=True, guidance_scale=s, negative_prompt_ids=...)`` (its
  ``UnbatchedClassifierFreeGuidanceLogitsProcessor``: one extra forward per step for the unconditional branch)
  with the same image-id mask as a ``LogitsProcessor``.

Each output is checked: exactly the grid's count of new tokens per image, all of them image ids. Prints
images/s of both and the ratio. ``--shape tiny`` (default) fits the 2-core CPU; ``--shape smollm2`` is the
SmolLM2-135M shape with the expanded 65,600-row vocabulary, 1,024 image tokens and 64 images (meant for
``--device cuda``; pass ``--images``/``--grid`` to shrink it on a CPU). Imports neither faiss, gguf, open_clip
nor diffusers.

    python benchmarks/bench_sample.py                          # tiny, CPU
    python benchmarks/bench_sample.py --shape smollm2 --device cuda
"""

from __future__ import annotations

import argparse
import time

import torch

from tokalign.align.formats.generator_init import VocabLayout
from tokalign.generate.sample import prefix as px
from tokalign.generate.sample.constraint import check_image_ids, image_bias
from tokalign.generate.sample.sampler import Settings, sample_image_ids
from tokalign.generate.sample.seeds import uniforms

SHAPES = {  # d_model, ffn, layers, heads, kv heads, text rows, codebook, grid side, images
    "tiny": dict(hidden=64, ffn=128, layers=2, heads=4, kv=2, text_rows=512, codebook=256, grid=16, images=8),
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


def run_tokalign(model, layout, prefixes, steps, scale):
    u = uniforms(list(range(len(prefixes))), steps)
    ids = sample_image_ids(model, prefixes, layout=layout, steps=steps, uniforms=u, settings=Settings(cfg_scale=scale),
                           unconditional=px.unconditional_prefix(layout))
    return ids


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


def check(ids: torch.Tensor, layout: VocabLayout, images: int, steps: int, name: str) -> None:
    if tuple(ids.shape) != (images, steps):
        raise SystemExit(f"{name}: got tokens of shape {tuple(ids.shape)}, expected ({images}, {steps})")
    check_image_ids(ids, layout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--images", type=int, default=None, help="Images per run [default: the shape's].")
    parser.add_argument("--grid", type=int, default=None, help="Grid side; grid^2 image tokens [default: the shape's].")
    parser.add_argument("--cfg-scale", type=float, default=3.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default=None,
                        help="[default: bfloat16 on cuda, float32 on cpu]")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per path, interleaved (the best counts).")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's].")
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    shape = dict(SHAPES[args.shape])
    images, side = args.images or shape["images"], args.grid or shape["grid"]
    steps = side * side
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    model, layout = build_model(shape, args.device, dtype)
    prefixes = prompts(layout, images)
    print(f"shape {args.shape}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, vocabulary "
          f"{layout.total_rows}, {images} images x {steps} tokens, cfg {args.cfg_scale}, {args.device} {dtype}, "
          f"{torch.get_num_threads()} threads")
    paths = [("tokalign", run_tokalign)] + ([] if args.skip_transformers else [("transformers", run_transformers)])
    for name, fn in paths:  # warm-up
        fn(model, layout, prefixes[:2], min(steps, 8), args.cfg_scale)
    best = {name: float("inf") for name, _ in paths}
    for _ in range(args.repeats):  # interleaved, so both paths see the same machine load
        for name, fn in paths:
            ids, seconds = timed(fn, model, layout, prefixes, steps, args.cfg_scale, device=args.device)
            check(ids, layout, images, steps, name)
            best[name] = min(best[name], seconds)
    rates = {name: images / seconds for name, seconds in best.items()}
    for name, seconds in best.items():
        print(f"{name:>12}: {seconds:8.2f} s  {rates[name]:8.2f} images/s  ({images * steps / seconds:,.0f} tokens/s)  "
              f"valid: {images} x {steps} image ids")
    if "transformers" in rates:
        print(f"       ratio: {rates['tokalign'] / rates['transformers']:.2f}x (tokalign / transformers)")


if __name__ == "__main__":
    main()
