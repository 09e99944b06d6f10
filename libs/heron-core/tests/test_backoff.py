from heron_core.backoff import Backoff


def test_delays_double_up_to_the_cap() -> None:
    backoff = Backoff(initial_s=0.5, max_s=30.0, reset_after_s=60.0)

    delays = [backoff.delay_after(uptime_s=1.0) for _ in range(9)]

    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_a_stable_run_resets_the_delay() -> None:
    backoff = Backoff(initial_s=0.5, max_s=30.0, reset_after_s=60.0)
    for _ in range(5):
        backoff.delay_after(uptime_s=1.0)

    assert backoff.delay_after(uptime_s=60.0) == 0.5
    assert backoff.delay_after(uptime_s=1.0) == 1.0
