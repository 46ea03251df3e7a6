"""Cheap bcrypt for every proxy these tests start (the admin user is created at each start)."""

from tests.api.mgmt import fast_bcrypt  # noqa: F401 (an autouse fixture)
