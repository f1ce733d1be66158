"""Image tokenizers: the contract every one keeps (a ``Protocol``), a registry by kind, and the kinds:
the built-in patch k-means, MoVQGAN (diffusers ``VQModel``, Kandinsky 2.2), and pretokenized ids."""
