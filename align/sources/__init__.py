"""Input sources for ``tokalign tokenize``: the reader contract, one reader per input format, image preparation,
and the procedural shape scenes behind the embedded default corpus."""
