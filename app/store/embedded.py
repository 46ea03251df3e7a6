"""The embedded store: mongomock-motor in memory, saved to ``<data dir>/store.json``.

Used when no MongoDB URL is configured, so a single proxy runs with nothing else installed.
The data directory belongs to one process at a time (``aivonx.lock``, an ``flock`` the OS
drops when the process dies). After each write the whole database is written to a new file
that atomically replaces the old one, so a crash leaves either the old or the new file,
never a torn one. The data is small (nodes, users, tokens, settings), so whole snapshots
are simpler and safer than a log. Usage records, which grow with traffic, are the exception:
they live in ``usage.jsonl``, an append-only journal (see :mod:`app.store.usage`).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from datetime import UTC
from pathlib import Path
from typing import Any

from bson import json_util
from bson.errors import BSONError

from . import backend
from .errors import DataDirLocked, StoreConnectError, StoreError, StoreUnavailable
from .store import Store
from .usage import EmbeddedUsageRepo

log = logging.getLogger(__name__)

LOCK_NAME = "aivonx.lock"
STORE_NAME = "store.json"
USAGE_NAME = "usage.jsonl"
FORMAT = "aivonx-store"
VERSION = 1
_WRITE_OPTIONS = json_util.JSONOptions(json_mode=json_util.JSONMode.RELAXED)
_READ_OPTIONS = json_util.JSONOptions(json_mode=json_util.JSONMode.RELAXED, tz_aware=True, tzinfo=UTC)


async def open_embedded(data_dir: Path, db_name: str) -> Store:
    """Lock ``data_dir``, load its snapshot into a fresh in-memory database, return the Store."""
    data_dir = Path(data_dir).expanduser().resolve()
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreConnectError(f"cannot create the data directory {data_dir}: {exc.strerror}") from exc
    lock = DataDirLock.acquire(data_dir)
    try:
        snapshot = SnapshotFile(data_dir / STORE_NAME)
        collections = await asyncio.get_running_loop().run_in_executor(None, snapshot.read)
        client = backend.new_embedded_client()
        db = client[db_name]
        persister = SnapshotPersister(db, snapshot)
        usage = EmbeddedUsageRepo(data_dir / USAGE_NAME)
        await usage.load()

        async def close() -> None:
            try:
                await usage.close()
                await persister.close()
            finally:
                lock.release()
                await backend.close_client(client)

        store = Store(
            kind="embedded",
            db=db,
            description=f"embedded store in {data_dir} (mongomock-motor, persisted to {STORE_NAME})",
            durability=persister,
            closer=close,
            health=persister.check,
            usage=usage,
        )
        try:
            for name, docs in collections.items():
                if docs:
                    await db[name].insert_many(docs)
            await store._prepare()
        except (backend.PyMongoError, StoreError) as exc:
            raise StoreError(
                f"cannot load {snapshot.path}: {exc}; refusing to start so the file is not "
                "overwritten: fix or restore it, or move it away to start empty"
            ) from exc
        return store
    except BaseException:
        lock.release()
        raise


class DataDirLock:
    """An exclusive ``flock`` on ``<data dir>/aivonx.lock`` holding the owner's pid."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        path = data_dir / LOCK_NAME
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreConnectError(f"cannot open the lock file {path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            owner = f"pid {pid}" if pid else "pid unknown"
            raise DataDirLocked(
                f"data directory {data_dir} is in use by another aivonx-proxy process ({owner}); "
                "stop it or pass a different --data-dir"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StoreConnectError(f"cannot lock {path}: {exc.strerror}") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        """Give the directory up; safe to call twice."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError):
        return None


class SnapshotFile:
    """``store.json``: every collection as MongoDB extended JSON, which keeps dates as dates."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp_path = path.with_name(path.name + ".tmp")

    def read(self) -> dict[str, list[dict[str, Any]]]:
        """The saved collections; {} when there is no file yet. A bad file is an error, never
        an empty store: starting empty would overwrite the user's data on the first write."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise self._unreadable(getattr(exc, "strerror", None) or str(exc)) from exc
        try:
            data = json_util.loads(text, json_options=_READ_OPTIONS)
        except (ValueError, TypeError, BSONError) as exc:
            raise self._unreadable(f"not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise self._unreadable(f"not an {FORMAT} file")
        if data.get("version") != VERSION:
            raise self._unreadable(f"format version {data.get('version')!r}, this program reads {VERSION}")
        collections = data.get("collections")
        if not isinstance(collections, dict) or not all(
            isinstance(docs, list) and all(isinstance(doc, dict) and "_id" in doc for doc in docs)
            for docs in collections.values()
        ):
            raise self._unreadable("malformed collections")
        return collections

    def write(self, collections: dict[str, list[dict[str, Any]]]) -> None:
        """Replace the file atomically: write a temporary file, fsync it, rename it over the
        old one, fsync the directory so the rename itself survives a power cut."""
        payload = {"format": FORMAT, "version": VERSION, "collections": collections}
        data = json_util.dumps(payload, json_options=_WRITE_OPTIONS, indent=1).encode()
        try:
            fd = os.open(self.tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self.tmp_path, self.path)
        except OSError as exc:
            self.tmp_path.unlink(missing_ok=True)
            raise StoreUnavailable(f"cannot save the embedded store to {self.path}: {exc.strerror or exc}") from exc
        _fsync_dir(self.path.parent)

    def _unreadable(self, reason: str) -> StoreError:
        return StoreError(
            f"cannot read the embedded store {self.path} ({reason}); refusing to start so the "
            "file is not overwritten: fix or restore it, or move it away to start empty"
        )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some filesystems cannot fsync a directory; the rename still happened
        pass
    finally:
        os.close(fd)


class SnapshotPersister:
    """Saves the in-memory database after writes: one snapshot at a time, bursts coalesced.

    Each :meth:`saved` call is a request; a snapshot taken after a request was made covers
    it, so while one snapshot is being written, any number of new requests share the next.
    """

    DEFER_SECONDS = 2.0

    def __init__(self, db: Any, snapshot: SnapshotFile) -> None:
        self._db = db
        self._file = snapshot
        self._lock = asyncio.Lock()
        self._requested = 0
        self._written = 0
        self._later: asyncio.TimerHandle | None = None
        self._background: asyncio.Future[None] | None = None
        self._closed = False
        self._error: str | None = None

    async def saved(self) -> None:
        if self._closed:
            raise StoreUnavailable("the store is closed")
        self._requested += 1
        await self._catch_up(self._requested)

    def saved_later(self) -> None:
        if self._closed:
            return
        self._requested += 1
        if self._later is None:
            self._later = asyncio.get_running_loop().call_later(self.DEFER_SECONDS, self._save_in_background)

    def check(self) -> None:
        """Raise StoreUnavailable while the last snapshot failed (e.g. the disk is full)."""
        if self._error:
            raise StoreUnavailable(self._error)

    async def close(self) -> None:
        """Write what is still pending, then refuse further writes."""
        if self._later is not None:
            self._later.cancel()
            self._later = None
        if self._background is not None:
            await self._background
        try:
            await self._catch_up(self._requested)
        finally:
            self._closed = True

    async def _catch_up(self, wanted: int) -> None:
        async with self._lock:
            if self._written >= wanted:
                return
            covered = self._requested  # every write counted so far is in the database now
            collections = await self._collections()
            try:
                await asyncio.get_running_loop().run_in_executor(None, self._file.write, collections)
            except StoreUnavailable as exc:
                self._error = str(exc)
                raise
            self._error = None
            self._written = covered

    async def _collections(self) -> dict[str, list[dict[str, Any]]]:
        names = sorted(await self._db.list_collection_names())
        return {name: await self._db[name].find({}).sort("_id", 1).to_list(None) for name in names}

    def _save_in_background(self) -> None:
        self._later = None
        self._background = asyncio.ensure_future(self._save_quietly())

    async def _save_quietly(self) -> None:
        try:
            await self._catch_up(self._requested)
        except StoreError as exc:
            log.error("deferred save failed: %s", exc)
