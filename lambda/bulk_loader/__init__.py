"""Batch-embed bulk loader: batch-transform output (JSONL in S3) into the k-NN index via
``_bulk``, with no re-embedding. Entry point: ``bulk_loader.handler.handler``."""
