"""``tokalign tokenize``, ``decode`` and ``demo-corpus``: image-caption data in, a corpus out, and back to images."""
