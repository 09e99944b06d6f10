"""``StartLimit``: how many single sign-ons one address may start per window."""

from heron_authgateway.start_limit import StartLimit


def test_an_address_gets_its_limit_per_window_and_then_again() -> None:
    limit = StartLimit(limit=3, window_s=60.0)
    assert [limit.allow("198.51.100.7", 10.0) for _ in range(4)] == [True, True, True, False]
    assert limit.allow("198.51.100.8", 11.0)  # another address has its own count
    assert limit.allow("198.51.100.7", 60.0)  # the next window


def test_ipv6_addresses_count_per_64() -> None:
    limit = StartLimit(limit=2, window_s=60.0)
    assert limit.allow("2001:db8:1:2::1", 0.0)
    assert limit.allow("2001:db8:1:2:ffff::9", 0.0)
    assert not limit.allow("[2001:db8:1:2::abcd]", 0.0)
    assert limit.allow("2001:db8:1:3::1", 0.0)
    assert limit.allow("::ffff:192.0.2.1", 0.0) and limit.allow("192.0.2.1", 0.0)
    assert not limit.allow("192.0.2.1", 0.0)  # IPv4-mapped is the same address


def test_the_number_of_addresses_tracked_is_bounded() -> None:
    limit = StartLimit(limit=5, window_s=60.0, max_addresses=2)
    assert limit.allow("192.0.2.1", 0.0) and limit.allow("192.0.2.2", 0.0)
    assert not limit.allow("192.0.2.3", 0.0)  # a third waits for the next window
    assert limit.allow("192.0.2.1", 0.0)  # those tracked go on
    assert limit.allow("192.0.2.3", 61.0)
