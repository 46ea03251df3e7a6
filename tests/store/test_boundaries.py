"""The promises that keep the driver inside app/store."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from app.store.base import Repo
from app.store.changes import ChangeRepo
from app.store.config import ConfigRepo
from app.store.nodes import NodeRepo
from app.store.secrets import SecretRepo
from app.store.tokens import TokenRepo
from app.store.usage import UsageRepo
from app.store.users import UserRepo

APP = Path(__file__).resolve().parents[2] / "app"
DRIVERS = {"motor", "pymongo", "bson", "mongomock", "mongomock_motor", "gridfs"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_app_store_imports_the_database_driver():
    offenders = [
        str(path.relative_to(APP))
        for path in APP.rglob("*.py")
        if "store" not in path.relative_to(APP).parts[:1] and imported_roots(path) & DRIVERS
    ]
    assert offenders == []


def test_inside_the_store_only_backend_knows_the_driver_classes():
    allowed = {"backend.py": DRIVERS, "embedded.py": {"bson"}}
    for path in (APP / "store").glob("*.py"):
        used = imported_roots(path) & DRIVERS
        assert used <= allowed.get(path.name, set()), (path.name, used)


def test_every_public_repo_coroutine_translates_driver_errors():
    repos = [ChangeRepo, ConfigRepo, NodeRepo, SecretRepo, TokenRepo, UsageRepo, UserRepo]
    assert set(repos) == set(Repo.__subclasses__())
    for repo in repos:
        for name, member in vars(repo).items():
            if not name.startswith("_") and inspect.iscoroutinefunction(member):
                assert getattr(member, "translates_errors", False), f"{repo.__name__}.{name}"
