"""The second stage: an auto-regressive text-to-image generator whose vocabulary is an LM's plus the image
codebook plus structure tokens (paper, sections 2 and 3.1): model building and init modes, freeze presets,
caption->image sequences, the Accelerate training loop, sampling with classifier-free guidance, and probes of
what training did. Imports ``tokalign.align``; never ``tokalign.probes`` or ``tokalign.cli``."""
