"""`semsearch embed`: a batch transform on this machine, JSON Lines in and out.

Input lines ``{"id", "text_inputs"}`` become output lines ``{"id", "embedding"}``, in the
same order, none dropped: the endpoint's own jsonlines code path
(inference_code.contracts.embed_jsonlines), so the vectors equal what a SageMaker batch
transform of the same model writes. The file is streamed a batch at a time, so memory
stays flat however large it is. The output appears only when every line is embedded.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from semsearch.errors import UsageError
from semsearch.models import resolve_model_dir


def register(subparsers) -> None:
    p = subparsers.add_parser("embed", help="embed a JSON Lines file the way a batch transform does",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", metavar="DIR", help="model folder (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--in", dest="input", metavar="JSONL", required=True,
                   help='lines {"id", "text_inputs"} ("-" reads stdin)')
    p.add_argument("--out", metavar="JSONL", required=True, help='lines {"id", "embedding"} ("-" writes stdout)')
    p.add_argument("--mode", choices=("exact", "fast"), default="exact",
                   help="exact: fp32 (default); fast: int8 on CPU / fp16 on GPU, as the endpoint's SEMSEARCH_MODE")
    p.add_argument("--batch-size", type=int, default=256, help="texts embedded per call (default %(default)s)")
    p.set_defaults(func=run)


def _counted(lines: IO[bytes], counter: list[int]) -> Iterator[bytes]:
    for line in lines:
        counter[0] += 1
        yield line


def run(args: argparse.Namespace) -> int:
    from inference_code.contracts import RequestError, embed_jsonlines
    from inference_code.embedder import load_embedder

    if args.batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {args.batch_size}")
    folder = resolve_model_dir(args.model, "--model")
    if args.input != "-" and not Path(args.input).is_file():
        raise UsageError(f"--in {args.input!r}: no such file")
    out_path = None if args.out == "-" else Path(args.out)
    if out_path is not None and not out_path.parent.is_dir():
        raise UsageError(f"--out {args.out!r}: folder {str(out_path.parent)!r} does not exist")

    embedder = load_embedder(folder, mode=args.mode)
    source = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")  # noqa: SIM115 - closed below
    read = [0]
    written = 0
    started = time.perf_counter()
    # Written beside the target and renamed at the end: a failure never leaves half a file
    # that looks like a finished one.
    if out_path is None:
        sink, tmp_name = sys.stdout, None
    else:
        fd, tmp_name = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
        sink = os.fdopen(fd, "w", encoding="utf-8")
    try:
        for line in embed_jsonlines(embedder, _counted(source, read), batch_size=args.batch_size):
            sink.write(line)
            written += 1
        sink.flush()
        if tmp_name is not None and out_path is not None:
            sink.close()
            os.replace(tmp_name, out_path)
            tmp_name = None
    except RequestError as e:
        raise UsageError(f"{args.input}: {e.message}") from None
    finally:
        if source is not sys.stdin.buffer:
            source.close()
        if tmp_name is not None:
            sink.close()
            os.unlink(tmp_name)
    seconds = time.perf_counter() - started
    rate = written / seconds if seconds > 0 else 0.0
    print(f"embedded {written} texts ({read[0]} lines read) in {seconds:.1f} s, {rate:.1f} texts/s, "
          f"{embedder.dimension} dims, mode {args.mode} -> {args.out}", file=sys.stderr)
    return 0
