"""The lease heartbeat: it waits for a lease to exist before it can lose it."""

from __future__ import annotations

import threading

from airflow_cloud_paas.store.lease import Heartbeat


def test_a_heartbeat_started_before_the_lease_exists_keeps_trying_and_stops_only_once_it_lost_it(caplog) -> None:
    """A create checks its plan before it registers the deployment: the first beats find nothing to renew."""
    answers = iter([False, False, True, True, False])  # not begun yet, begun and renewed, then taken over
    calls: list[bool] = []
    done = threading.Event()

    def renew() -> bool:
        answer = next(answers, None)
        if answer is None:  # a beat after the loss: the heartbeat should have stopped
            calls.append(None)
            return False
        calls.append(answer)
        if len(calls) == 5:
            done.set()
        return answer

    with Heartbeat(renew, 0.01):
        assert done.wait(30), calls
        threading.Event().wait(0.2)  # room for beats that must not come
    assert calls == [False, False, True, True, False]
    assert "Lost the lease" in caplog.text


def test_a_heartbeat_that_never_held_the_lease_never_says_it_lost_it(caplog) -> None:
    beats = threading.Semaphore(0)

    def renew() -> bool:
        beats.release()
        return False

    with Heartbeat(renew, 0.01):
        for _ in range(5):
            assert beats.acquire(timeout=30)
    assert "Lost the lease" not in caplog.text
