"""The ``custom`` endpoint flavor's handler, as SageMaker runs it from model.tar.gz's code/.

Modules (each also importable as a top-level module from code/, where SageMaker puts them):

- inference.py: model_fn / input_fn / predict_fn / output_fn, the SageMaker entry point.
- contracts.py: request/response shapes, validation, ``EmbeddingService``, ``embed_jsonlines``.
- embedder.py: ``load_embedder(model_dir, mode)`` -> ``Embedder.embed(texts, kind)``.
- model_info.py: pooling, normalization, max tokens and prefixes read from the model's files.
- onnx_export.py: the fp32 and int8 ONNX files ONNX Runtime serves on CPU.
- packaged_corpus.py: corpus embeddings packaged in the model for the nn_train_data mode.

Nothing here imports semsearch or stacks: this folder ships on its own.
"""
