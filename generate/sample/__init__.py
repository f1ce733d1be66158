"""Sampling images from a trained generator (``tokalign generator sample``).

One concept per module: :mod:`.config` (the validated settings), :mod:`.constraint` (the precomputed image-id
mask), :mod:`.distribution` (temperature / top-k / top-p and the seeded draw), :mod:`.seeds` (per-sample
randomness), :mod:`.prefix` (prompts to left-padded prefixes), :mod:`.sampler` (the reference loop: HF forward
per step, KV-cached, CFG-batched), :mod:`.static_decoder` (a static-KV-cache forward over a LLaMA-family model),
:mod:`.fast_sampler` (the fast path: static cache, image-row head, CUDA graph), :mod:`.loading` (the model
folder and dtype), :mod:`.decoding` (can the samples be decoded? settled before sampling), :mod:`.output` (the
output folder, labels, grid and files) and :mod:`.run` (the one entry point, :func:`~.run.sample_images`).
Importing this package is torch-free.
"""
