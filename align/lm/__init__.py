"""The text side: resolving an LM spec, extracting and caching its frozen input embeddings and tokenizer,
and turning captions into token ids and bag-of-words vectors."""
