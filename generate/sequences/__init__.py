"""Training sequences: built once from a corpus into a memory-mapped folder (:mod:`.build`), read with
deterministic caption dropout (:mod:`.dataset`), each target token in one bucket (:mod:`.buckets`)."""
