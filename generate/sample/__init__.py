"""Sampling images from a trained generator (``tokalign generator sample``).

One concept per module: :mod:`.config` (the validated settings), :mod:`.constraint` (the precomputed image-id
mask), :mod:`.distribution` (temperature / top-k / top-p and the seeded draw), :mod:`.seeds` (per-sample
randomness), :mod:`.prefix` (prompts to left-padded prefixes), :mod:`.sampler` (the KV-cached, CFG-batched
loop), :mod:`.loading` (the model folder and its image tokenizer), :mod:`.output` (the output folder, grid and
files) and :mod:`.run` (the one entry point, :func:`~.run.sample_images`). Importing this package is torch-free.
"""
