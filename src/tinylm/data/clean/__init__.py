"""`tinylm data clean`: normalisation, quality and language filters, PII scrubbing, exact and MinHash
near-duplicate removal, before the tokenizer. See docs/DATA_CLEANING.md."""
