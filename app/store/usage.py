"""Usage records: one per proxied request (collection ``usage``), and their aggregation.

A record crossing this boundary is a plain dict with the keys of :data:`FIELDS`; ``time``
is the request's start in epoch seconds (a float), ``id`` a unique string the caller
chose (so a retried batch is written once). Two implementations share one interface
(``insert_many``, ``summary``, ``latest``, ``prune``, ``count``, ``set_retention``, ``close``):

* :class:`UsageRepo` — MongoDB through Motor. A TTL index on ``time`` expires records after
  ``usage_retention_days``; the index is (re)made by :meth:`UsageRepo.set_retention` because
  the retention is a live setting. The periodic prune of the caller deletes the same records
  too, which is what bounds a store without TTL monitor (mongomock). No count cap: MongoDB
  is sized by its operator.
* :class:`EmbeddedUsageRepo` — the embedded store. Usage is the one collection that grows
  with traffic, so it is kept out of ``store.json`` (rewritten whole on every write) and out of
  mongomock (which needs ~50 s to load 200k documents). The records are persisted to
  ``usage.jsonl`` next to ``store.json``: append-only, one JSON object per line, one ``write``
  and one ``fsync`` per batch (the recorder batches about once a second). In memory there are
  only the columns the aggregation needs (time, tokens, error flag, user, key, model, node:
  typed arrays and lists of interned strings, about 120 bytes a record) plus each record's
  place in the journal, and the last :attr:`~EmbeddedUsageRepo.RECENT` whole records for
  :meth:`~EmbeddedUsageRepo.latest`. Pruning (retention, and a cap of
  :attr:`~EmbeddedUsageRepo.cap` newest records) drops rows in memory only; once the journal
  holds more than twice the live records (plus slack) it is compacted by copying the live
  records' lines, byte for byte, to a temporary file that atomically replaces it. Loading
  skips a torn last line (a crash mid-append) and duplicated ids (a batch retried after a
  partial write), then compacts if it found either.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from array import array
from collections import deque
from collections.abc import MutableSequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import backend
from .base import Durability, Repo
from .errors import StoreError, StoreUnavailable

FIELDS = ("id", "time", "request_id", "user_id", "username", "key_id", "key_name", "client", "route", "method",
          "path", "model", "node", "status", "ttfb_ms", "duration_ms", "tokens_in", "tokens_out", "retried",
          "attempts", "retried_on", "strategy", "candidates", "loaded", "queued_ms", "error", "failed")
# group_by → (the field grouped on, the field shown as the group's name)
GROUPS: dict[str, tuple[str, str]] = {
    "user": ("user_id", "username"),
    "key": ("key_id", "key_name"),
    "model": ("model", "model"),
    "node": ("node", "node"),
    "day": ("day", "day"),
}
_TTL_INDEX = "time_ttl"
_COUNTS = ("requests", "tokens_in", "tokens_out", "errors")
# The embedded store's in-memory columns: name → array typecode (None: a list of interned strings).
_COLUMNS: dict[str, str | None] = {
    "time": "d", "tokens_in": "q", "tokens_out": "q", "failed": "b", "offset": "q", "length": "q",
    "user_id": None, "username": None, "key_id": None, "key_name": None, "model": None, "node": None,
}
_UNKNOWN = -1  # tokens not reported
Columns = dict[str, MutableSequence[Any]]


def _to_datetime(epoch: float) -> datetime:
    value = datetime.fromtimestamp(epoch, UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def _empty() -> dict[str, int]:
    return dict.fromkeys(_COUNTS, 0)


def _finish(totals: dict[str, int], groups: list[dict[str, Any]], group_by: str | None) -> dict[str, Any]:
    if group_by == "day":
        groups.sort(key=lambda g: g["id"] or "")
    else:
        groups.sort(key=lambda g: (-(g["tokens_in"] + g["tokens_out"]), -g["requests"], str(g["name"] or "")))
    return {"totals": totals, "groups": groups if group_by else []}


class UsageRepo(Repo):
    """Usage on MongoDB (and the "mongodb" store kind in tests, on mongomock)."""

    collection = "usage"
    cap: int | None = None

    def __init__(self, db: Any, durability: Durability) -> None:
        super().__init__(db, durability)
        self._db = db

    async def set_retention(self, days: float) -> None:
        """Make the TTL index expire records ``days`` after their time (idempotent)."""
        seconds = max(1, int(days * 86400))
        current = (await self._col.index_information()).get(_TTL_INDEX)
        if current is not None and current.get("expireAfterSeconds") == seconds:
            return
        if current is not None:
            try:
                await self._db.command({"collMod": self.collection,
                                        "index": {"keyPattern": {"time": 1}, "expireAfterSeconds": seconds}})
                return
            except Exception as exc:  # mongomock knows no collMod: rebuild the index instead
                if backend.is_unavailable(exc):
                    raise
            await self._col.drop_index(_TTL_INDEX)
        await self._col.create_index("time", name=_TTL_INDEX, expireAfterSeconds=seconds)

    async def insert_many(self, records: list[dict[str, Any]]) -> None:
        """Store records; ids already stored are skipped, so a batch may be retried safely."""
        if not records:
            return
        docs = []
        for record in records:
            doc = {name: record.get(name) for name in FIELDS[1:]}
            doc["_id"] = record["id"]
            doc["time"] = _to_datetime(record["time"])
            doc["day"] = _day(record["time"])
            docs.append(doc)
        try:
            await self._col.insert_many(docs, ordered=False)
        except backend.BulkWriteError as exc:
            if not backend.only_duplicates(exc):
                raise

    async def summary(self, start: float, end: float, group_by: str | None = None) -> dict[str, Any]:
        """Requests, tokens and errors of the records with ``start <= time < end``, in total and per group."""
        match = {"$match": {"time": {"$gte": _to_datetime(start), "$lt": _to_datetime(end)}}}
        counts = {
            "requests": {"$sum": 1},
            "tokens_in": {"$sum": {"$ifNull": ["$tokens_in", 0]}},
            "tokens_out": {"$sum": {"$ifNull": ["$tokens_out", 0]}},
            "errors": {"$sum": {"$cond": ["$failed", 1, 0]}},
        }
        rows = await self._col.aggregate([match, {"$group": {"_id": None, **counts}}]).to_list(None)
        totals = {k: int(rows[0][k]) for k in _COUNTS} if rows else _empty()
        groups: list[dict[str, Any]] = []
        if group_by is not None:
            field, name = GROUPS[group_by]
            stage = {"_id": f"${field}", "name": {"$last": f"${name}"}, **counts}
            for row in await self._col.aggregate([match, {"$group": stage}]).to_list(None):
                groups.append({"id": row["_id"], "name": row.get("name"), **{k: int(row[k]) for k in _COUNTS}})
        return _finish(totals, groups, group_by)

    async def latest(self, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` records, newest first."""
        docs = await self._col.find({}).sort([("time", -1), ("_id", -1)]).limit(limit).to_list(None)
        out = []
        for doc in docs:
            record = {name: doc.get(name) for name in FIELDS[1:]}
            record["id"] = str(doc["_id"])
            when = doc["time"]
            when = when.replace(tzinfo=UTC) if when.tzinfo is None else when
            record["time"] = when.timestamp()
            out.append(record)
        return out

    async def prune(self, before: float) -> int:
        """Delete records older than ``before`` (the TTL index does it too, where there is one)."""
        result = await self._col.delete_many({"time": {"$lt": _to_datetime(before)}})
        return int(result.deleted_count)

    async def count(self) -> int:
        return int(await self._col.count_documents({}))

    async def close(self) -> None:
        return None


class EmbeddedUsageRepo:
    """Usage for the embedded store: aggregation columns in memory, whole records in a journal."""

    collection = "usage"
    # About 120 bytes of memory a record (plus ~550 on disk): 200k ≈ 24 MB; loading takes ~2 s
    # per 100k at start. Busier proxies (or longer histories) belong on MongoDB, which has no cap.
    cap: int | None = 200_000
    # Compact once the journal holds this many lines more than twice the live records.
    COMPACT_SLACK = 10_000
    # Whole records kept for latest() (the console's Requests list after a restart).
    RECENT = 1000
    # Ids remembered to store a retried batch once (retries are of the latest batches).
    REMEMBERED_IDS = 20_000

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._tmp_path = self.path.with_name(self.path.name + ".tmp")
        self._cols: Columns = _new_columns()
        self._recent: deque[dict[str, Any]] = deque(maxlen=self.RECENT)
        self._ids: deque[str] = deque()
        self._id_set: set[str] = set()
        self._lines = 0  # complete lines in the journal (live or not)
        self._size = 0  # bytes in the journal
        self._torn = False  # a failed write left a partial line that could not be cut off
        self._fd: int | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    # -- life cycle -------------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the journal (a missing one is empty); refuse an unreadable one so it is not overwritten."""
        loaded = await _in_thread(self._read)
        self._cols, recent, ids, self._lines, self._size, clean = loaded
        self._recent.extend(recent)
        self._remember(ids)
        async with self._lock:
            self._trim()
            if not clean or self._garbage():
                await self._compact()

    async def _ensure_indexes(self) -> None:
        return None

    async def set_retention(self, days: float) -> None:
        """Nothing to configure: the caller's periodic :meth:`prune` applies the retention."""

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # -- writes -----------------------------------------------------------------------------------

    async def insert_many(self, records: list[dict[str, Any]]) -> None:
        """Append records to the journal (one write and fsync), then to the columns."""
        async with self._lock:
            if self._closed:
                raise StoreUnavailable("the store is closed")
            fresh: dict[str, dict[str, Any]] = {}
            for record in records:
                record_id = record["id"]
                if record_id not in self._id_set and record_id not in fresh:
                    _check(record)
                    fresh[record_id] = record
            if not fresh:
                return
            batch = list(fresh.values())
            places = await _in_thread(self._append, batch)
            for record, (offset, length) in zip(batch, places, strict=True):
                _add(self._cols, record, offset, length)
                self._recent.append({name: record.get(name) for name in FIELDS})
            self._remember(fresh)
            self._lines += len(batch)
            if self.cap is not None and self._count() > self.cap + self.cap // 20:
                self._trim()
            if self._garbage():
                await self._compact()

    async def prune(self, before: float) -> int:
        """Drop records older than ``before`` and beyond the cap; compact the journal when worthwhile."""
        async with self._lock:
            times = self._cols["time"]
            keep = [i for i, when in enumerate(times) if when >= before]
            removed = len(times) - len(keep)
            if removed:
                self._cols = await _in_thread(_select, self._cols, keep)
                self._recent = deque((r for r in self._recent if r["time"] >= before), maxlen=self.RECENT)
            removed += self._trim()
            if removed and self._garbage() and not self._closed:
                await self._compact()
        return removed

    # -- reads ------------------------------------------------------------------------------------

    async def summary(self, start: float, end: float, group_by: str | None = None) -> dict[str, Any]:
        """As :meth:`UsageRepo.summary`; computed in a worker thread over a copy of the columns."""
        names = ["time", "tokens_in", "tokens_out", "failed"]
        if group_by is not None and group_by != "day":
            names.extend(dict.fromkeys(GROUPS[group_by]))
        columns = {name: self._cols[name][:] for name in names}
        return await _in_thread(_summarise, columns, start, end, group_by)

    async def latest(self, limit: int) -> list[dict[str, Any]]:
        """The newest records (at most :attr:`RECENT`), newest first."""
        records = sorted(reversed(self._recent), key=lambda r: r["time"], reverse=True)[:limit]
        return [dict(r) for r in records]

    async def count(self) -> int:
        return self._count()

    # -- internals --------------------------------------------------------------------------------

    def _count(self) -> int:
        return len(self._cols["time"])

    def _remember(self, ids: Any) -> None:
        for record_id in ids:
            self._ids.append(record_id)
            self._id_set.add(record_id)
        while len(self._ids) > self.REMEMBERED_IDS:
            self._id_set.discard(self._ids.popleft())

    def _trim(self) -> int:
        """Keep the newest ``cap`` records; returns how many were dropped."""
        extra = self._count() - self.cap if self.cap is not None else 0
        if extra <= 0:
            return 0
        for column in self._cols.values():
            del column[:extra]
        return extra

    def _garbage(self) -> bool:
        return self._lines > 2 * self._count() + self.COMPACT_SLACK

    def _read(self) -> tuple[Columns, list[dict[str, Any]], list[str], int, int, bool]:
        """Parse the journal line by line (worker thread): columns, recent records, ids, lines, size, clean."""
        columns = _new_columns()
        recent: deque[dict[str, Any]] = deque(maxlen=self.RECENT)
        seen: set[str] = set()
        order: deque[str] = deque(maxlen=self.REMEMBERED_IDS)
        clean = True
        lines = offset = 0
        try:
            with self.path.open("rb") as journal:
                for line in journal:
                    start, offset = offset, offset + len(line)
                    if not line.endswith(b"\n"):  # torn by a crash mid-append
                        clean = False
                        break
                    lines += 1
                    try:
                        record = json.loads(line)
                        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                            raise ValueError("not a usage record")
                        _check(record)
                    except (ValueError, UnicodeDecodeError):
                        clean = False
                        continue
                    if record["id"] in seen:
                        clean = False
                        continue
                    seen.add(record["id"])
                    order.append(record["id"])
                    _add(columns, record, start, len(line) - 1)
                    recent.append({name: record.get(name) for name in FIELDS})
        except FileNotFoundError:
            return columns, [], [], 0, 0, True
        except OSError as exc:
            raise StoreError(f"cannot read the usage journal {self.path} ({exc.strerror}); refusing to start so "
                             "it is not overwritten: fix its permissions or move it away") from exc
        return columns, list(recent), list(order), lines, offset, clean

    def _append(self, records: list[dict[str, Any]]) -> list[tuple[int, int]]:
        """Encode and append ``records`` (in a worker thread): one write, one fsync; their places.

        A failed write is cut off again (``ftruncate``) so a retry starts on a fresh line; if even
        that fails, the next write starts with a newline, leaving the torn piece a line of its own
        (skipped when loading, dropped by the next compaction).
        """
        lines = [json.dumps({name: record.get(name) for name in FIELDS}, separators=(",", ":"),
                            ensure_ascii=False).encode() for record in records]
        good = self._size
        try:
            if self._fd is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                good = self._size = os.fstat(self._fd).st_size
            lead = b"\n" if self._torn else b""
            places = []
            offset = self._size + len(lead)
            for line in lines:
                places.append((offset, len(line)))
                offset += len(line) + 1
            view = memoryview(lead + b"\n".join(lines) + b"\n")
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError as exc:
            self._cut_back(good)
            raise StoreUnavailable(f"cannot append to the usage journal {self.path}: {exc.strerror or exc}") from exc
        self._size = offset
        self._torn = False
        return places

    def _cut_back(self, good: int) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, good)
            self._size = good
            return
        except OSError:
            pass
        self._torn = True
        try:
            self._size = os.fstat(self._fd).st_size
        except OSError:
            os.close(self._fd)
            self._fd = None  # reopened (and measured) by the next append

    async def _compact(self) -> None:
        """Rewrite the journal with the live records only (caller holds the lock)."""
        places = list(zip(self._cols["offset"], self._cols["length"], strict=True))
        offsets, size = await _in_thread(self._rewrite, places)
        self._cols["offset"] = array("q", offsets)
        self._lines = len(offsets)
        self._size = size
        self._torn = False

    def _rewrite(self, places: list[tuple[int, int]]) -> tuple[list[int], int]:
        """Copy the lines at ``places`` to a new journal that replaces the old one (worker thread)."""
        offsets: list[int] = []
        written = 0
        try:
            fd = os.open(self._tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                with open(self.path, "rb") as source, os.fdopen(os.dup(fd), "wb") as out:
                    for offset, length in places:
                        source.seek(offset)
                        line = source.read(length)
                        if len(line) != length:
                            raise OSError(f"the journal is shorter than expected at byte {offset}")
                        offsets.append(written)
                        out.write(line)
                        out.write(b"\n")
                        written += length + 1
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self._tmp_path, self.path)
        except FileNotFoundError:
            if places:
                raise StoreUnavailable(f"the usage journal {self.path} disappeared") from None
            self._tmp_path.unlink(missing_ok=True)
            return [], 0
        except OSError as exc:
            self._tmp_path.unlink(missing_ok=True)
            raise StoreUnavailable(f"cannot compact the usage journal {self.path}: {exc.strerror or exc}") from exc
        if self._fd is not None:  # appends go to the new file from now on
            os.close(self._fd)
            self._fd = None
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)
        return offsets, written


def _new_columns() -> Columns:
    return {name: array(code) if code else [] for name, code in _COLUMNS.items()}


def _check(record: dict[str, Any]) -> None:
    when = record.get("time")
    if isinstance(when, bool) or not isinstance(when, int | float):
        raise ValueError("a usage record's time must be epoch seconds")


def _tokens(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else _UNKNOWN


def _add(columns: Columns, record: dict[str, Any], offset: int, length: int) -> None:
    columns["time"].append(float(record["time"]))
    columns["tokens_in"].append(_tokens(record.get("tokens_in")))
    columns["tokens_out"].append(_tokens(record.get("tokens_out")))
    columns["failed"].append(1 if record.get("failed") else 0)
    columns["offset"].append(offset)
    columns["length"].append(length)
    for name in ("user_id", "username", "key_id", "key_name", "model", "node"):
        value = record.get(name)
        columns[name].append(sys.intern(value) if isinstance(value, str) else value)


def _select(columns: Columns, keep: list[int]) -> Columns:
    """The rows at ``keep`` of every column (worker thread)."""
    selected: Columns = {}
    for name, column in columns.items():
        code = _COLUMNS[name]
        picked = [column[i] for i in keep]
        selected[name] = array(code, picked) if code else picked
    return selected


async def _in_thread(func: Any, *args: Any) -> Any:
    """Run a file operation in a worker thread. If the caller is cancelled meanwhile, the operation
    still completes before the cancellation goes on, so the journal lock is never released while a
    thread still writes the file."""
    future = asyncio.get_running_loop().run_in_executor(None, func, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise


def _summarise(columns: Columns, start: float, end: float, group_by: str | None) -> dict[str, Any]:
    times, tokens_in, tokens_out, failed = columns["time"], columns["tokens_in"], columns["tokens_out"], \
        columns["failed"]
    totals = _empty()
    groups: dict[Any, dict[str, Any]] = {}
    keys: MutableSequence[Any] | None = None
    names: MutableSequence[Any] | None = None
    if group_by is not None and group_by != "day":
        field, name = GROUPS[group_by]
        keys, names = columns[field], columns[name]
    days: dict[int, str] = {}
    for i, when in enumerate(times):
        if not start <= when < end:
            continue
        spent_in = tokens_in[i] if tokens_in[i] > 0 else 0
        spent_out = tokens_out[i] if tokens_out[i] > 0 else 0
        error = failed[i]
        totals["requests"] += 1
        totals["tokens_in"] += spent_in
        totals["tokens_out"] += spent_out
        totals["errors"] += error
        if group_by is None:
            continue
        if keys is None:
            number = int(when // 86400)
            key = days.get(number)
            if key is None:
                key = days[number] = _day(when)
            shown = key
        else:
            key = keys[i]
            shown = names[i]  # type: ignore[index]
        group = groups.get(key)
        if group is None:
            group = groups[key] = {"id": key, "name": shown, **_empty()}
        group["name"] = shown
        group["requests"] += 1
        group["tokens_in"] += spent_in
        group["tokens_out"] += spent_out
        group["errors"] += error
    return _finish(totals, list(groups.values()), group_by)
