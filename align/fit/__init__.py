"""``tokalign fit`` (paper, section 3.2): the contrastive trainer of the image-token table against a frozen LM,
its configuration, bags fast path, loss, held-out split and evaluation, and the export of a fitted run."""
