"""A candidate index in SQLite: the same blocking keys as `MemoryIndex`, for populations kept on disk.

Two tables: ``empi_row`` (record key -> its comparison row as JSON) and ``empi_block`` (blocking key ->
record key, indexed). It is a cache derivable from the Patients in the store and can be rebuilt.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any


class SqliteIndex:
    def __init__(self, path: Path | str = ":memory:", max_block: int = 2000) -> None:
        self.db = sqlite3.connect(str(path), check_same_thread=False)
        self.max_block = max_block
        self.db.executescript(
            """
            PRAGMA journal_mode=WAL;
            PRAGMA synchronous=NORMAL;
            CREATE TABLE IF NOT EXISTS empi_row (key TEXT PRIMARY KEY, row TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS empi_block (block TEXT NOT NULL, key TEXT NOT NULL,
                                                   PRIMARY KEY (block, key)) WITHOUT ROWID;
            CREATE INDEX IF NOT EXISTS empi_block_key ON empi_block (key);
            """
        )

    def add(self, row: dict[str, Any], keys: list[str]) -> None:
        with self.db:
            self._remove(row["unique_id"])
            self.db.execute("INSERT INTO empi_row VALUES (?, ?)", (row["unique_id"], json.dumps(row)))
            self.db.executemany("INSERT OR IGNORE INTO empi_block VALUES (?, ?)", [(k, row["unique_id"]) for k in keys])

    def add_many(self, items: list[tuple[dict[str, Any], list[str]]]) -> None:
        """Bulk load (no removal of earlier versions: for building a fresh index)."""
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO empi_row VALUES (?, ?)",
                [(r["unique_id"], json.dumps(r)) for r, _ in items],
            )
            self.db.executemany(
                "INSERT OR IGNORE INTO empi_block VALUES (?, ?)",
                [(k, r["unique_id"]) for r, ks in items for k in ks],
            )

    def remove(self, key: str) -> None:
        with self.db:
            self._remove(key)

    def _remove(self, key: str) -> None:
        self.db.execute("DELETE FROM empi_block WHERE key = ?", (key,))
        self.db.execute("DELETE FROM empi_row WHERE key = ?", (key,))

    def lookup(self, keys: list[str], exclude: str | None = None) -> list[dict[str, Any]]:
        found: set[str] = set()
        for k in keys:
            members = [
                r[0]
                for r in self.db.execute("SELECT key FROM empi_block WHERE block = ? LIMIT ?", (k, self.max_block + 1))
            ]
            if len(members) <= self.max_block:
                found.update(members)
        found.discard(exclude or "")
        if not found:
            return []
        ordered = sorted(found)
        marks = ",".join("?" * len(ordered))
        rows = self.db.execute(f"SELECT row FROM empi_row WHERE key IN ({marks}) ORDER BY key", ordered)
        return [json.loads(r[0]) for r in rows]

    def __len__(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM empi_row").fetchone()[0])
