"""The run in progress, on disk: finished records are appended as they come, so an interrupted run
loses only the cells in flight, and the next `nox -s matrix` with the same plan picks up from there."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

from harness.records import CellRecord, ConversionRecord


class Journal:
    """Append-only JSON lines of finished conversions and cells for one plan."""

    def __init__(self, run_dir: Path, plan_id: str, fresh: bool = False) -> None:
        self.run_dir = run_dir
        self.path = run_dir / "journal.jsonl"
        self.state_path = run_dir / "plan.json"
        self._lock = threading.Lock()
        self.conversions: dict[str, ConversionRecord] = {}
        self.cells: dict[str, CellRecord] = {}
        state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        if fresh or state.get("plan") != plan_id or state.get("complete"):
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            self.state_path.write_text(json.dumps({"plan": plan_id, "complete": False}))
        else:
            self._load()
        self.resumed = len(self.conversions) + len(self.cells)
        self._file = self.path.open("a")
        if self._file.tell() and not self.path.read_bytes().endswith(b"\n"):
            self._file.write("\n")  # end a line cut short by a kill, so the next record parses

    @property
    def converted_dir(self) -> Path:
        path = self.run_dir / "converted"
        path.mkdir(exist_ok=True)
        return path

    def converted_path(self, key: str) -> Path:
        """Where the model a conversion (or quantization) made is kept."""
        return self.converted_dir / f"{key[:24]}.mnn"

    def float_path(self, key: str) -> Path:
        """Where a quantized variant's float model (before quantization) is kept."""
        return self.converted_dir / f"{key[:24]}.float.mnn"

    def add(self, record: ConversionRecord | CellRecord) -> None:
        kind = "conversion" if isinstance(record, ConversionRecord) else "cell"
        with self._lock:
            (self.conversions if kind == "conversion" else self.cells)[record.key] = record
            self._file.write(json.dumps({"kind": kind, "record": record.model_dump(mode="json")}) + "\n")
            self._file.flush()

    def complete(self) -> None:
        """Mark the run finished: the next run with this plan starts afresh instead of resuming."""
        self._file.close()
        self.state_path.write_text(json.dumps({**json.loads(self.state_path.read_text()), "complete": True}))

    def _load(self) -> None:
        for line in self.path.read_text().splitlines() if self.path.exists() else []:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut short by a kill
                continue
            if entry["kind"] == "conversion":
                record = ConversionRecord.model_validate(entry["record"])
                self.conversions[record.key] = record
            else:
                cell = CellRecord.model_validate(entry["record"])
                self.cells[cell.key] = cell
