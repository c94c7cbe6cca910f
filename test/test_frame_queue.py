"""The latest-frame slots between subscription callbacks and the inference worker."""

import threading
import time

from seg_node.ros.harness import wait_for
from seg_node.runtime.frame_slots import LatestFrameSlots, PendingFrame


def test_a_newer_frame_replaces_the_waiting_one_per_camera():
    slots = LatestFrameSlots()
    assert slots.put(PendingFrame('a', 1, 0.0)) is None
    assert slots.put(PendingFrame('a', 2, 0.1)).message == 1
    assert slots.put(PendingFrame('b', 3, 0.2)) is None
    taken = {f.camera: f.message for f in slots.take_all(timeout=0)}
    assert taken == {'a': 2, 'b': 3}
    assert slots.take_all(timeout=0) == []


def test_take_all_wakes_on_put_and_on_close():
    slots = LatestFrameSlots()
    got = []
    worker = threading.Thread(target=lambda: got.append(slots.take_all(timeout=5)))
    worker.start()
    # Put only once the worker waits (a waiter registered on the condition): the put must wake it.
    assert wait_for(lambda: len(slots._ready._waiters) == 1, 5)
    started = time.monotonic()
    slots.put(PendingFrame('a', 1, 0.0))
    worker.join(timeout=2)
    assert [f.message for f in got[0]] == [1]
    assert time.monotonic() - started < 2, 'woken by the put, not by the 5 s timeout'
    worker = threading.Thread(target=lambda: got.append(slots.take_all(timeout=5)))
    worker.start()
    assert wait_for(lambda: len(slots._ready._waiters) == 1, 5)
    slots.close()
    worker.join(timeout=2)
    assert not worker.is_alive() and got[1] == [] and slots.closed
