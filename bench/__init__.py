"""Benchmarks: figures, never pass/fail tests (timed asserts do not belong in tests/).

Each module here other than __main__ is one benchmark: it defines ``main(argv=None) -> dict``
returning JSON-ready results. ``python -m bench`` runs them all (``python -m bench NAME`` runs
some), prints each result as JSON and writes it to ``bench/results/<NAME>.json``; a module
can also be run on its own with ``python -m bench.NAME [options]``.
"""
