"""The SageMaker training job's code: train.py is the entry point (see its docstring).

Self-contained on purpose: it runs alone in a training container, so nothing here imports
`semsearch` or `stacks`; catalog values arrive as hyperparameters.
"""
