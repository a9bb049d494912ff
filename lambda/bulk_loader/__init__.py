"""Batch embedding's two functions around the SageMaker transform job: ``bulk_loader.prepare.handler``
turns documents (JSONL in S3) into endpoint request lines, the way the ingest pipeline asks;
``bulk_loader.handler.handler`` writes the transform's output into the k-NN index via
``_bulk``, with no re-embedding, once it has checked the index is that model version's."""
