"""What `semsearch evaluate`, `semsearch train` (and the training job) and `semsearch compare`
read: our query/document pairs, or a folder in the BEIR layout. One reader for all three.

Pairs (training_code/pairs.py): .jsonl / .json / .csv files, or a folder of them.

BEIR, the layout public retrieval benchmarks ship in (github.com/beir-cellar/beir)::

    FOLDER/corpus.jsonl        {"_id": "d1", "title": "...", "text": "..."}   one document a line
    FOLDER/queries.jsonl       {"_id": "q1", "text": "..."}                    one query a line
    FOLDER/qrels/<split>.tsv   query-id <TAB> corpus-id <TAB> score            header line optional

A location is the folder (its default split: ``test`` to evaluate, ``train`` to train) or one
qrels file, ``FOLDER/qrels/dev.tsv``, which names the split. A document is embedded as
``title + " " + text`` (BEIR's own models do the same). Scores are integers: above 0 is
relevant, the score being the document's gain for nDCG (graded qrels); 0 or below is judged
not relevant. Queries.jsonl may hold queries of other splits; only the split's are scored,
and of those only queries with a relevant document. Every document of corpus.jsonl is
searched. Ids may be JSON strings or integers (compared as text).

Every problem is a PairsError naming the file, the line and what is wrong (an id the qrels
name that corpus.jsonl or queries.jsonl lacks, a duplicate id, a score that is not an
integer, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .pairs import Pair, PairsError, load_pairs
from .retrieval import Qrels, build_qrels

BEIR_FILES = ("corpus.jsonl", "queries.jsonl")
QRELS_DIR = "qrels"
QRELS_HEADER = ("query-id", "corpus-id", "score")


@dataclass(frozen=True)
class RetrievalSet:
    """What one location holds: what evaluation scores, and the pairs training learns from."""

    #: The queries, the corpus searched and the relevance of documents to queries.
    qrels: Qrels
    #: (query, relevant document) pairs: the pairs themselves, or one per BEIR judgment above 0.
    pairs: list[Pair]
    files: list[Path]
    format: str  # "pairs" or "beir"
    split: str | None = None
    #: BEIR: the split's queries left out because none of their judged documents is relevant.
    dropped_queries: int = 0

    def describe(self) -> dict:
        """For metrics.json and `--json` outputs."""
        return {"format": self.format, "split": self.split, "files": [str(f) for f in self.files],
                "pairs": len(self.pairs), "queries": len(self.qrels.queries),
                "documents": len(self.qrels.documents)}


def beir_folder(location: str | Path) -> tuple[Path, str | None] | None:
    """(folder, split) when ``location`` is a BEIR folder (split None) or one of its qrels files."""
    path = Path(location)
    if path.is_dir() and all((path / name).is_file() for name in BEIR_FILES):
        return path, None
    if path.is_file() and path.suffix.lower() == ".tsv" and path.parent.name == QRELS_DIR:
        folder = path.parent.parent
        missing = [name for name in BEIR_FILES if not (folder / name).is_file()]
        if missing:
            raise PairsError(f"{path}: a qrels file, but its BEIR folder {folder} has no {' or '.join(missing)}")
        return folder, path.stem
    return None


def load(location: str | Path, *, default_split: str = "test") -> RetrievalSet:
    """Pairs files or a BEIR folder (or qrels file) at ``location``."""
    beir = beir_folder(location)
    if beir is not None:
        folder, split = beir
        return read_beir(folder, split or default_split)
    pairs, files = load_pairs([location])
    return RetrievalSet(qrels=build_qrels(pairs), pairs=pairs, files=files, format="pairs")


def _json_lines(path: Path):
    """(line number, object) of each non-blank line."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise PairsError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise PairsError(f"{path} line {number}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(record, dict):
            raise PairsError(f"{path} line {number}: expected an object with '_id' and 'text', "
                             f"got {type(record).__name__}")
        yield number, record


def _id(record: dict, where: str) -> str:
    if "_id" not in record:
        raise PairsError(f"{where}: missing '_id'")
    value = record["_id"]
    if isinstance(value, bool) or not isinstance(value, str | int) or str(value) == "":
        raise PairsError(f"{where}: '_id' must be a non-empty string or an integer, got {value!r}")
    return str(value)


def _string(record: dict, key: str, where: str, *, required: bool) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if key not in record:
        raise PairsError(f"{where}: missing {key!r}")
    if not isinstance(value, str):
        raise PairsError(f"{where}: {key!r} must be a string, got {type(value).__name__}")
    return value


def _read_texts(path: Path, *, documents: bool) -> dict[str, str]:
    texts: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, record in _json_lines(path):
        where = f"{path} line {number}"
        key = _id(record, where)
        if key in texts:
            raise PairsError(f"{where}: duplicate '_id' {key!r} (first on line {first_line[key]})")
        text = _string(record, "text", where, required=True)
        if documents:
            title = _string(record, "title", where, required=False)
            text = f"{title} {text}".strip() if title.strip() else text
        if not text.strip():
            raise PairsError(f"{where}: '_id' {key!r} has no text")
        texts[key], first_line[key] = text, number
    if not texts:
        raise PairsError(f"{path}: no records in the file")
    return texts


def _read_qrels(path: Path) -> list[tuple[int, str, str, int]]:
    """(line, query id, corpus id, score) of every judgment."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        cells = line.rstrip("\r\n").split("\t")
        where = f"{path} line {number}"
        if number == 1 and tuple(c.strip().lower() for c in cells) == QRELS_HEADER:
            continue
        if len(cells) != 3:
            raise PairsError(f"{where}: expected 3 tab-separated columns (query-id, corpus-id, score), "
                             f"got {len(cells)}")
        query_id, doc_id, score = (c.strip() for c in cells)
        if not query_id or not doc_id:
            raise PairsError(f"{where}: empty {'query-id' if not query_id else 'corpus-id'}")
        try:
            grade = int(score)
        except ValueError:
            raise PairsError(f"{where}: score {score!r} is not an integer") from None
        rows.append((number, query_id, doc_id, grade))
    if not rows:
        raise PairsError(f"{path}: no judgments in the file")
    return rows


def read_beir(folder: str | Path, split: str) -> RetrievalSet:
    """One split of a BEIR folder, checked line by line."""
    folder = Path(folder)
    qrels_path = folder / QRELS_DIR / f"{split}.tsv"
    if not qrels_path.is_file():
        found = sorted(p.stem for p in (folder / QRELS_DIR).glob("*.tsv"))
        hint = (f"it has {', '.join(found)}: name one as {folder / QRELS_DIR / (found[0] + '.tsv')}" if found
                else f"there is no {QRELS_DIR}/ with .tsv files")
        raise PairsError(f"{folder}: no {QRELS_DIR}/{split}.tsv for split {split!r} ({hint})")
    corpus_path, queries_path = folder / "corpus.jsonl", folder / "queries.jsonl"
    corpus = _read_texts(corpus_path, documents=True)
    queries = _read_texts(queries_path, documents=False)
    judgments = _read_qrels(qrels_path)

    doc_ids = list(corpus)
    doc_index = {doc_id: i for i, doc_id in enumerate(doc_ids)}
    grades: dict[str, dict[int, float]] = {}
    judged: set[str] = set()
    for number, query_id, doc_id, grade in judgments:
        where = f"{qrels_path} line {number}"
        if query_id not in queries:
            raise PairsError(f"{where}: query-id {query_id!r} is not in {queries_path}")
        if doc_id not in doc_index:
            raise PairsError(f"{where}: corpus-id {doc_id!r} is not in {corpus_path}")
        judged.add(query_id)
        if grade > 0:
            grades.setdefault(query_id, {})[doc_index[doc_id]] = float(grade)
    if not grades:
        raise PairsError(f"{qrels_path}: no judgment scores a document above 0, so nothing is relevant")
    query_ids = list(grades)  # the order of first appearance in the qrels file
    qrels = Qrels(queries=[queries[q] for q in query_ids], documents=[corpus[d] for d in doc_ids],
                  relevant=[frozenset(grades[q]) for q in query_ids], grades=[grades[q] for q in query_ids])
    pairs = [Pair(queries[q], corpus[doc_ids[d]]) for q in query_ids for d in grades[q]]
    return RetrievalSet(qrels=qrels, pairs=pairs, files=[corpus_path, queries_path, qrels_path], format="beir",
                        split=split, dropped_queries=len(judged) - len(query_ids))
