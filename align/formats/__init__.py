"""On-disk contracts, torch-free: atomic writes, the one tensor hasher, and one module per format.

``corpus`` (tokenized pairs), ``run_folder`` (a fit's outputs) and ``generator_init`` (the rows that extend an
LM's vocabulary, with the vocabulary layout the generator imports). Each module owns its names, its readers and
its writer's rules; every other module imports them from here.
"""
