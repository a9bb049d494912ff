"""`semsearch local up|status|down`: the whole search path on this machine."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time

from semsearch.local.stack import DEFAULT_ENDPOINT_PORT, DEFAULT_OPENSEARCH_PORT, FLAVORS, LocalStack
from semsearch.models import DEFAULT_MODEL_ID, resolve_model_dir
from stacks.catalog import MODELS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("local", help="run OpenSearch + the local endpoint and provision them",
                                   description=__doc__)
    sub = parser.add_subparsers(dest="local_command", required=True, metavar="ACTION")

    up = sub.add_parser("up", help="start OpenSearch and `semsearch serve`, provision with the glue, ingest")
    up.add_argument("--model-dir", help="sentence-transformers folder (default: the packaged all-MiniLM-L6-v2)")
    up.add_argument("--model", default=DEFAULT_MODEL_ID, choices=sorted(MODELS), metavar="CATALOG_ID",
                    help="the catalog entry the folder is (or was fine-tuned from): it gives the index its "
                         f"dimension and space type, as on AWS (default: {DEFAULT_MODEL_ID})")
    up.add_argument("--corpus", metavar="JSONL", help='documents to ingest, one {"id", "text"} per line')
    up.add_argument("--opensearch-port", type=int, default=DEFAULT_OPENSEARCH_PORT)
    up.add_argument("--endpoint-port", type=int, default=DEFAULT_ENDPOINT_PORT)
    up.add_argument("--no-security", action="store_true", help="plain HTTP, no users (default: TLS + basic auth)")
    up.add_argument("--flavor", choices=FLAVORS,
                    help="the endpoint: tei (TEI's own router) or custom (our handler, `semsearch serve`), each "
                         "behind a SigV4-checking front, with that flavor's connector body (default: the one this "
                         "stack serves with; for a new stack, the flavor the default config deploys)")
    up.add_argument("--tei-bin", metavar="PATH", help="TEI's text-embeddings-router to start (default: "
                    "$SEMSEARCH_TEI_BIN, else ../shared/tools/tei/text-embeddings-router beside the repository)")
    up.add_argument("--tei-url", metavar="URL", help="a TEI that runs already, serving this model "
                    "(default: $SEMSEARCH_TEI_URL)")
    up.set_defaults(func=_up)

    status = sub.add_parser("status", help="what runs where (exit status 1 when not running)")
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(func=_status)

    down = sub.add_parser("down", help="stop both servers")
    down.add_argument("--purge", action="store_true", help="also delete the node's data and the stack's state")
    down.set_defaults(func=_down)


class _OneLine(logging.Formatter):
    """The glue's log lines as progress; its tracebacks (for CloudWatch) stay out of a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        return f"local up: {record.name.removeprefix('search_glue.')}: {record.getMessage()}"


def _up(args: argparse.Namespace) -> int:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    logging.getLogger("search_glue").addHandler(handler)
    logging.getLogger("search_glue").propagate = False
    started = time.monotonic()
    status = LocalStack().up(resolve_model_dir(args.model_dir), model=args.model, corpus=args.corpus,
                             opensearch_port=args.opensearch_port, endpoint_port=args.endpoint_port,
                             security=not args.no_security, flavor=args.flavor, tei_bin=args.tei_bin,
                             tei_url=args.tei_url,
                             progress=lambda msg: print(f"local up: {msg}", file=sys.stderr, flush=True))
    print(f"local up: ready in {time.monotonic() - started:.0f} s", file=sys.stderr)
    _print_status(status)
    return 0


def _status(args: argparse.Namespace) -> int:
    status = LocalStack().status()
    if args.json:
        print(json.dumps(status))
    else:
        _print_status(status)
    return 0 if status["running"] else 1


def _print_status(status: dict) -> None:
    if not status.get("opensearch_url"):
        print("not running (no local stack: `semsearch local up`)")
        return
    print(f"{'running:':<16}{status['running']}")
    for key in ("flavor", "tei", "opensearch_url", "endpoint_url", "index", "model_id", "pipeline", "documents"):
        if status.get(key) is not None:
            print(f"{key + ':':<16}{status[key]}")
    if status.get("auth"):
        print(f"{'auth:':<16}{status['auth']['username']} / {status['auth']['password']} (CA {status['ca_file']})")


def _down(args: argparse.Namespace) -> int:
    stopped = LocalStack().down(purge=args.purge)
    print(f"local down: stopped {', '.join(stopped) or 'nothing (not running)'}"
          + ("; data removed" if args.purge else ""))
    return 0
