"""What earlier runs computed, kept and found by content: the idea behind ccache and Bazel's action cache.

A conversion is found by its key (harness.plan: the converter's identity, the ONNX model's hash, the flags, the
quantization settings and the code that judges it). A run is found by what decides its outcome: the converted
model's bytes (without the uuid and version string MNN stamps on each file), the runtime's identity, the API, the
run settings, the inputs and the judge. So identical converted models (different converters often write the same
bytes) run once per runtime, a rerun with nothing changed does no MNN work, and a run where one toolchain changed
redoes only the cells that touch it. Records go to one SQLite database as they finish (written every second), so
an interrupted run loses only the cells in flight and the last second's; converted models are kept beside it. The
documents a run wrote are remembered with the plan they came from: a run of an unchanged plan writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from harness.records import CellRecord, ConversionRecord

FLUSH_S = 1.0  # records are written at least this often: a killed run loses the cells in flight and this long
SCHEMA = """
CREATE TABLE IF NOT EXISTS conversions (key TEXT PRIMARY KEY, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (key TEXT PRIMARY KEY, record TEXT NOT NULL, run TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (target TEXT PRIMARY KEY, plan TEXT NOT NULL, files TEXT NOT NULL);
"""


class Store:
    """Conversion and run records by key, in `<root>/store.sqlite`; converted models in `<root>/models/`.

    With `fresh`, records from earlier runs are ignored (and replaced as this run writes its own).
    """

    def __init__(self, root: Path, run: str = "", fresh: bool = False) -> None:
        self.root, self.run, self.fresh = root, run, fresh  # run: when this run started, named in reused cells
        (root / "models").mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(root / "store.sqlite", check_same_thread=False, isolation_level=None)
        self._db.executescript("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;" + SCHEMA)
        self._lock = threading.Lock()
        self._written: set[str] = set()  # keys this run wrote: all a fresh run may read
        self._pending: dict[str, list[tuple]] = {}  # records not yet written, by table
        self._flushed = time.monotonic()

    # -------------------------------------------------------------- conversions

    def converted_path(self, key: str) -> Path:
        return converted_path(self.root, key)

    def float_path(self, key: str) -> Path:
        return float_path(self.root, key)

    def conversions(self, keys: Iterable[str]) -> dict[str, ConversionRecord]:
        """The stored conversions among `keys` whose models are still on disk."""
        found = {key: ConversionRecord.model_validate_json(text) for key, text in self._select("conversions", keys)}
        return {key: record for key, record in found.items() if record.outcome.verdict != "pass"
                or (self.converted_path(key).exists() and (not record.quantize or self.float_path(key).exists()))}

    def add_conversion(self, record: ConversionRecord) -> None:
        self._insert("conversions", record.key, record.model_dump_json())

    # -------------------------------------------------------------- runs

    def runs(self, keys: Iterable[str]) -> dict[str, tuple[CellRecord, str]]:
        """Stored runs among `keys`: each as the cell that made it, and when the run that made it started."""
        return {key: (CellRecord.model_validate_json(text), run) for key, text, run in
                self._select("runs", keys, "record, run")}

    def add_run(self, key: str, record: CellRecord) -> None:
        self._insert("runs", key, record.model_dump_json(), self.run)

    # -------------------------------------------------------------- documents

    def current(self, target: Path, plan: str) -> bool:
        """Whether the documents a run of `plan` wrote to `target` are all still there, unchanged."""
        if self.fresh:
            return False
        row = self._db.execute("SELECT plan, files FROM documents WHERE target = ?",
                               (str(target.resolve()),)).fetchone()
        return bool(row) and row[0] == plan and all(
            _digest(Path(path)) == digest for path, digest in json.loads(row[1]).items())

    def remember(self, target: Path, plan: str, files: Iterable[Path]) -> None:
        """Record that a run of `plan` wrote `files` (documents, or bundle directories) for `target`."""
        files = {str(path.resolve()): _digest(path) for path in files}
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO documents VALUES (?, ?, ?)",
                             (str(target.resolve()), plan, json.dumps(files)))

    def close(self) -> None:
        with self._lock:
            self._flush()
        self._db.close()

    # -------------------------------------------------------------- plumbing

    def _insert(self, table: str, key: str, *values: str) -> None:
        with self._lock:
            self._pending.setdefault(table, []).append((key, *values))
            if self.fresh:
                self._written.add(key)
            if time.monotonic() - self._flushed > FLUSH_S:
                self._flush()

    def _flush(self) -> None:
        """Write what is pending in one transaction (one per record would cost the run a third of a ms each)."""
        with self._db:
            for table, rows in self._pending.items():
                self._db.executemany(f"INSERT OR REPLACE INTO {table} VALUES ({', '.join('?' * len(rows[0]))})",
                                     rows)
        self._pending, self._flushed = {}, time.monotonic()

    def _select(self, table: str, keys: Iterable[str], columns: str = "record") -> list[tuple]:
        wanted = [key for key in keys if not self.fresh or key in self._written]
        with self._lock:
            self._flush()
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS wanted (key TEXT PRIMARY KEY)")
            self._db.execute("DELETE FROM wanted")
            self._db.executemany("INSERT OR IGNORE INTO wanted VALUES (?)", ((key,) for key in wanted))
            return self._db.execute(f"SELECT {table}.key, {columns} FROM {table} JOIN wanted USING (key)").fetchall()


def converted_path(root: Path, key: str) -> Path:
    """Where the model a conversion (or quantization) made is kept, in the store at `root`."""
    return root / "models" / f"{key[:32]}.mnn"


def float_path(root: Path, key: str) -> Path:
    """Where a quantized variant's float model (before quantization) is kept, in the store at `root`."""
    return root / "models" / f"{key[:32]}.float.mnn"


def _digest(path: Path) -> str:
    """A file's hash, or for a directory (of reproducer bundles), a hash of its entries' names, sizes and times of
    change ('' if it is gone)."""
    if path.is_dir():
        entries = sorted((entry.name, entry.stat().st_size, entry.stat().st_mtime_ns) for entry in os.scandir(path))
        return hashlib.sha256(json.dumps(entries).encode()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
