"""``tokalign generator probe``: what image training did to the LM (paper Table 1) and to its image rows (section 3.2).

:func:`~tokalign.generate.probe.run.run_probe` is the entry point; :class:`~tokalign.generate.probe.config.
ProbeConfig` its settings. Modules: ``heldout_text`` (the held-out English text, from the standard library),
``prompts`` (+ ``prompts.json``, package data), ``language`` (perplexity, off-text mass, greedy prompts),
``init_rows`` (the rows an init mode started from, a registry), ``row_retention`` (cosines, top-k neighbour
overlap, chance), ``clip_score`` / ``clip_samples`` (open_clip from a local folder), ``report_md``.
"""
