"""Query/document pairs from JSONL, JSON or CSV files, checked record by record.

A record holds either (``query``, ``text``) or (``sentence1``, ``sentence2``); other
columns (``id``, scores) are ignored. Every problem names the file, the line and the
column, because the person reading the error has a 16k-line file open in an editor.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

COLUMN_PAIRS = (("query", "text"), ("sentence1", "sentence2"))
SUFFIXES = (".jsonl", ".json", ".csv")
_EXPECTED = "expected 'query' and 'text', or 'sentence1' and 'sentence2'"


class PairsError(ValueError):
    """A pairs file that cannot be used; the message names file, line and column."""


@dataclass(frozen=True)
class Pair:
    query: str
    text: str


def _check_record(record: object, where: str) -> Pair:
    if not isinstance(record, dict):
        raise PairsError(f"{where}: expected an object with 'query' and 'text', got {type(record).__name__}")
    for query_col, text_col in COLUMN_PAIRS:
        if query_col in record or text_col in record:
            for col in (query_col, text_col):
                if col not in record:
                    raise PairsError(f"{where}: missing column {col!r} ({_EXPECTED})")
                value = record[col]
                if not isinstance(value, str):
                    raise PairsError(f"{where}: column {col!r} must be a string, got {type(value).__name__}")
                if not value.strip():
                    raise PairsError(f"{where}: column {col!r} is empty")
            return Pair(record[query_col], record[text_col])
    raise PairsError(f"{where}: missing column 'query' ({_EXPECTED}; found {sorted(record)})")


def _jsonl_records(path: Path, text: str, first_line: int = 1) -> Iterator[tuple[object, str]]:
    for number, line in enumerate(text.splitlines(), start=first_line):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            yield json.loads(line), where
        except json.JSONDecodeError as e:
            raise PairsError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None


def _json_array_records(path: Path, text: str) -> Iterator[tuple[object, str]]:
    # Decode element by element (instead of json.loads of the whole array) so that each
    # record keeps the line it starts on for the error messages.
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1

    def skip_space(p: int) -> int:
        while p < len(text) and text[p].isspace():
            p += 1
        return p

    def where(p: int) -> str:
        return f"{path} line {text.count(chr(10), 0, p) + 1}"

    pos = skip_space(pos)
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        try:
            record, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise PairsError(f"{path} line {e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
        yield record, where(pos)
        pos = skip_space(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip_space(pos + 1)
        elif pos < len(text) and text[pos] == "]":
            return
        else:
            raise PairsError(f"{where(pos)}: expected ',' or ']' in the JSON array")


def _csv_records(path: Path, text: str) -> Iterator[tuple[object, str]]:
    reader = csv.DictReader(text.splitlines(keepends=True))
    header = reader.fieldnames or []
    if not any(q in header and t in header for q, t in COLUMN_PAIRS):
        # Name the partner of a column that is there ('text' when only 'query' is), else 'query'.
        missing = next((t if q in header else q for q, t in COLUMN_PAIRS if q in header or t in header), "query")
        raise PairsError(f"{path} line 1: missing column {missing!r} in the header ({_EXPECTED}; found {header})")
    for row in reader:
        # A short row leaves None in the missing cells: report it as that column missing.
        record = {k: v for k, v in row.items() if k is not None and v is not None}
        yield record, f"{path} line {reader.line_num}"


def read_pairs(path: str | Path) -> list[Pair]:
    """Every pair in one file; raises PairsError naming the first bad record."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise PairsError(f"{path}: unsupported file type (expected one of {', '.join(SUFFIXES)})")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise PairsError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if path.suffix.lower() == ".csv":
        records = _csv_records(path, text)
    elif path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        records = _json_array_records(path, text)
    else:
        # .jsonl, and .json files that hold one object per line.
        records = _jsonl_records(path, text)
    pairs = [_check_record(record, where) for record, where in records]
    if not pairs:
        raise PairsError(f"{path}: no pairs in the file")
    return pairs


def pair_files(location: str | Path) -> list[Path]:
    """One file, or every pairs file in a folder (a SageMaker channel), in name order."""
    location = Path(location)
    if location.is_file():
        return [location]
    if location.is_dir():
        files = sorted(p for p in location.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise PairsError(f"{location}: no {', '.join(SUFFIXES)} files in the folder")
        return files
    raise PairsError(f"{location}: no such file or folder")


def load_pairs(locations: Iterable[str | Path]) -> tuple[list[Pair], list[Path]]:
    """All pairs of all files (in order) and the files they came from."""
    files = [f for loc in locations for f in pair_files(loc)]
    return [p for f in files for p in read_pairs(f)], files


def split_off(pairs: list[Pair], fraction: float, *, seed: int, max_held_out: int) -> tuple[list[Pair], list[Pair]]:
    """(kept, held_out): a seeded random slice of about ``fraction`` held out.

    Pairs sharing a query stay on the same side, so no held-out query was seen in training.
    """
    queries = sorted({p.query for p in pairs})
    random.Random(seed).shuffle(queries)
    n_held = min(max(1, round(len(queries) * fraction)), max_held_out, len(queries) - 1)
    if n_held < 1:
        raise PairsError(f"cannot hold out an evaluation split from {len(queries)} distinct queries: give an eval file")
    held = set(queries[:n_held])
    return [p for p in pairs if p.query not in held], [p for p in pairs if p.query in held]


def sample(pairs: list[Pair], k: int | None, *, seed: int) -> list[Pair]:
    """A seeded random ``k`` of the pairs (all of them when k is None or larger)."""
    if k is None or k >= len(pairs):
        return list(pairs)
    return random.Random(seed).sample(pairs, k)
