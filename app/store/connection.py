"""Choosing the database: MongoDB when a URL is configured, else the embedded store."""

from __future__ import annotations

from pathlib import Path

from .embedded import open_embedded
from .mongodb import open_mongodb
from .store import Store


async def connect(mongo_url: str | None, db_name: str, data_dir: Path, connect_timeout: float = 30.0) -> Store:
    """Open the store; raise StoreConnectError, DataDirLocked or StoreError when that fails.

    ``data_dir`` is only used by the embedded store; ``connect_timeout`` only by MongoDB.
    """
    if mongo_url:
        return await open_mongodb(mongo_url, db_name, connect_timeout)
    return await open_embedded(Path(data_dir), db_name)
