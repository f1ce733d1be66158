"""The library both stages stand on: formats, sources, image tokenizers, the text side, the tokenize pipeline,
shared training parts and the fit. Nothing here imports ``generate``, ``probes`` or ``cli``."""
