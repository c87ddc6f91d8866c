"""The forked child that `servicetags diff` puts on a second core: results, errors, deaths."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from core.errors import ServiceTagsError
from servicetags import forked

# Forking a test process that has threads is what forked.available() refuses in production;
# here the child only computes and exits, so the warning newer Pythons give is moot.
pytestmark = pytest.mark.filterwarnings("ignore:.*multi-threaded.*fork:DeprecationWarning")


def test_the_result_is_computed_in_a_child_process():
    parent = os.getpid()
    pending = forked.Pending(lambda: (os.getpid(), {"digest": b"\x00" * 32, "n": [1, 2]}))
    pid, value = pending.result()
    pending.close()
    assert pid != parent
    assert value == {"digest": b"\x00" * 32, "n": [1, 2]}


def test_an_error_in_the_child_is_raised_with_its_message():
    def fail() -> None:
        raise ServiceTagsError("old.json: values[3] (Storage): properties.addressPrefixes[0] bad")

    pending = forked.Pending(fail)
    with pytest.raises(ServiceTagsError, match=r"^old\.json: values\[3\] \(Storage\)"):
        pending.result()
    pending.close()


def test_a_child_that_dies_is_replaced_by_the_work_done_here():
    parent = os.getpid()

    def work() -> int:
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)  # the child dies before writing anything
        return 42

    pending = forked.Pending(work)
    assert pending.result() == 42
    pending.close()


def test_close_without_a_result_kills_and_reaps_the_child():
    pending = forked.Pending(lambda: time.sleep(30))
    pid = pending._pid
    started = time.monotonic()
    pending.close()
    if pid in forked._unreaped:  # still exiting: collect it as the next fork would
        os.waitpid(pid, 0)
        forked._unreaped.remove(pid)
    assert time.monotonic() - started < 5
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    pending.close()  # twice is harmless


def test_fork_is_not_used_while_another_thread_runs():
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not forked.available()
    finally:
        stop.set()
        thread.join()


def test_fork_is_not_used_on_a_single_cpu():
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(allowed)})
    try:
        assert not forked.available()
    finally:
        os.sched_setaffinity(0, allowed)
