"""Login throttling: slow down, then refuse for a while, repeated failed logins.

Failures are counted per username and per client address. After a few free
failures each further one imposes a doubling delay; after many, the key is
refused for a fixed period. The caller answers a throttled attempt at once
with 429 and ``Retry-After`` — nothing ever sleeps while holding a
connection, and a throttled attempt does not even check the password (so it
cannot be used to keep guessing).

The real user is never locked out for good: a lockout ends after
``lockout`` seconds and starts the count afresh, failures are forgotten after
``window`` quiet seconds, and a successful login clears the user's count.
An address's count is not cleared by a success (an attacker could otherwise
log into their own account to reset it), but its limits are higher, since
several people may share one address.

Memory is bounded: at most ``max_entries`` keys per table, least recently
failed evicted first, expired entries swept as they are met.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    """How one table (usernames or addresses) reacts to failures."""

    free_failures: int = 3      # failures allowed without any delay
    base_delay: float = 1.0     # delay after the first failure beyond the free ones, doubled each time
    max_delay: float = 30.0
    lockout_after: int = 10     # failures in a window that refuse the key for `lockout` seconds
    lockout: float = 15 * 60.0
    window: float = 15 * 60.0   # quiet time after which failures are forgotten
    max_entries: int = 10_000


USER_POLICY = Policy()
ADDRESS_POLICY = Policy(free_failures=10, lockout_after=30)


@dataclass
class _Entry:
    failures: int = 0
    last_failure: float = 0.0
    blocked_until: float = 0.0


class Throttle:
    """Failure counts for one kind of key."""

    def __init__(self, policy: Policy, clock: Callable[[], float]):
        self.policy = policy
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def wait(self, key: str) -> float:
        """Seconds before ``key`` may try again; 0 when it may try now."""
        entry = self._live(key)
        if entry is None:
            return 0.0
        return max(0.0, entry.blocked_until - self._clock())

    def failed(self, key: str) -> float:
        """Count a failure; the delay it imposes (0 while still within the free failures)."""
        now = self._clock()
        entry = self._live(key) or _Entry()
        entry.failures += 1
        entry.last_failure = now
        policy = self.policy
        if entry.failures >= policy.lockout_after:
            entry.blocked_until = now + policy.lockout
        elif entry.failures > policy.free_failures:
            extra = entry.failures - policy.free_failures - 1
            entry.blocked_until = now + min(policy.max_delay, policy.base_delay * 2 ** min(extra, 30))
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > policy.max_entries:
            self._entries.popitem(last=False)
        return max(0.0, entry.blocked_until - now)

    def reset(self, key: str) -> None:
        self._entries.pop(key, None)

    def _live(self, key: str) -> _Entry | None:
        """The key's entry, dropped (and ``None``) once it has nothing left to say."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        now = self._clock()
        locked_out = entry.failures >= self.policy.lockout_after
        if (locked_out and now >= entry.blocked_until) or (
                not locked_out and now >= entry.blocked_until and now - entry.last_failure >= self.policy.window):
            del self._entries[key]
            return None
        return entry


class LoginThrottle:
    """The two tables a login consults: by username and by client address."""

    def __init__(self, *, users: Policy = USER_POLICY, addresses: Policy = ADDRESS_POLICY,
                 clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.users = Throttle(users, self._now)
        self.addresses = Throttle(addresses, self._now)

    def _now(self) -> float:
        # Through an attribute so a test can swap ``clock`` on a running proxy.
        return self.clock()

    def retry_after(self, username: str, address: str) -> int:
        """Whole seconds to wait before this attempt may be evaluated; 0 = go ahead."""
        wait = max(self.users.wait(user_key(username)), self.addresses.wait(address_key(address)))
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, username: str, address: str) -> int:
        """Count a failed attempt; whole seconds the next attempt must wait (0 = none)."""
        wait = max(self.users.failed(user_key(username)), self.addresses.failed(address_key(address)))
        return math.ceil(wait) if wait > 0 else 0

    def succeeded(self, username: str) -> None:
        self.users.reset(user_key(username))


def user_key(username: str) -> str:
    # Usernames are unique ignoring case: "Admin" and "admin" share one count.
    return username.strip().lower()[:256]


def address_key(address: str) -> str:
    """An IPv4 address, or the /64 of an IPv6 one (a single host usually owns a whole /64)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if ip.version == 6:
        mapped = ip.ipv4_mapped  # type: ignore[union-attr]
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
