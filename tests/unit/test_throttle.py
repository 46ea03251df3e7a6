"""Login throttling: slower, then refused for a while, never for good; bounded memory."""

from __future__ import annotations

from app.auth.throttle import LoginThrottle, Policy, Throttle, address_key, user_key


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


POLICY = Policy(free_failures=3, base_delay=1.0, max_delay=8.0, lockout_after=10, lockout=900.0, window=900.0,
                max_entries=100)


def test_free_failures_then_doubling_delays_up_to_the_cap():
    clock = Clock()
    throttle = Throttle(POLICY, clock)
    delays = [throttle.failed("bob") for _ in range(9)]
    assert delays == [0, 0, 0, 1, 2, 4, 8, 8, 8]


def test_the_delay_is_a_wait_not_a_sleep_and_it_passes():
    clock = Clock()
    throttle = Throttle(POLICY, clock)
    for _ in range(4):
        throttle.failed("bob")
    assert throttle.wait("bob") == 1.0
    clock.now += 0.5
    assert throttle.wait("bob") == 0.5
    clock.now += 0.5
    assert throttle.wait("bob") == 0


def test_lockout_after_many_failures_ends_and_starts_afresh():
    clock = Clock()
    throttle = Throttle(POLICY, clock)
    for _ in range(10):
        clock.now += 10  # past every delay
        throttle.failed("bob")
    assert throttle.wait("bob") == 900
    clock.now += 899
    assert throttle.wait("bob") == 1
    clock.now += 1
    assert throttle.wait("bob") == 0
    # A fresh start: the next failures are free again, not another lockout.
    assert throttle.failed("bob") == 0
    assert len(throttle) == 1


def test_failures_are_forgotten_after_a_quiet_window():
    clock = Clock()
    throttle = Throttle(POLICY, clock)
    for _ in range(3):
        throttle.failed("bob")
    clock.now += 900
    assert throttle.wait("bob") == 0
    assert throttle.failed("bob") == 0  # counted from zero again
    assert len(throttle) == 1


def test_memory_is_bounded_least_recent_first():
    clock = Clock()
    throttle = Throttle(POLICY, clock)
    for i in range(250):
        throttle.failed(f"user{i}")
    assert len(throttle) == 100
    throttle.failed("user249")
    assert throttle.wait("user0") == 0


def test_login_throttle_counts_users_and_addresses_separately():
    clock = Clock()
    login = LoginThrottle(users=POLICY, addresses=Policy(free_failures=5, lockout_after=20, max_delay=8.0),
                          clock=clock)
    for _ in range(4):
        login.failed("alice", "10.0.0.1")
    assert login.retry_after("alice", "10.0.0.2") == 1     # the user is slowed from any address
    assert login.retry_after("carol", "10.0.0.1") == 0     # the address is still under its limit
    clock.now += 2
    login.failed("dave", "10.0.0.1")
    login.failed("erin", "10.0.0.1")                        # the address's 6th failure
    assert login.retry_after("frank", "10.0.0.1") == 1     # any user from that address waits
    assert login.retry_after("frank", "10.0.0.9") == 0


def test_success_clears_the_user_but_not_the_address():
    clock = Clock()
    login = LoginThrottle(users=POLICY, addresses=Policy(free_failures=2, max_delay=8.0), clock=clock)
    for _ in range(5):
        clock.now += 10
        login.failed("alice", "10.0.0.1")
    clock.now += 100
    login.succeeded("alice")
    assert login.users.wait(user_key("alice")) == 0
    assert login.failed("alice", "10.0.0.7") == 0          # the user's count starts again from zero
    assert login.addresses.failed(address_key("10.0.0.1")) > 0  # the address still remembers


def test_retry_after_is_whole_seconds_rounded_up():
    clock = Clock()
    login = LoginThrottle(users=POLICY, clock=clock)
    for _ in range(4):
        login.failed("bob", "1.2.3.4")
    clock.now += 0.2
    assert login.retry_after("bob", "1.2.3.4") == 1


def test_usernames_ignore_case_and_ipv6_groups_by_64():
    assert user_key(" Admin ") == user_key("admin")
    assert address_key("2001:db8::1") == address_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert address_key("2001:db8:0:1::1") != address_key("2001:db8::1")
    assert address_key("::ffff:10.1.2.3") == "10.1.2.3"
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("not an ip") == "not an ip"
