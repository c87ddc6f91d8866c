"""One function run in a forked child process, to put a second core to work.

For CPU-bound pure Python whose inputs are already in memory (the child sees them for free,
copy-on-write) and whose result is small (it comes back through a pipe, `marshal`led).
Anything unexpected in the child (a crash, a kill, a bug) makes `result()` run the function
again in this process, so the worst case is the serial time, never a wrong or lost result.
"""

from __future__ import annotations

import marshal
import os
import sys
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from core.errors import ServiceTagsError

T = TypeVar("T")

_OK, _ERROR = 0, 1
_CHILD_FAILED = 70


def available() -> bool:
    """Whether forking helps and is safe: a POSIX fork, a second CPU, and no other thread
    (a child of a threaded process may inherit a lock held forever)."""
    if not hasattr(os, "fork"):
        return False
    # The CPUs this process may run on (a container's cpuset), not the machine's.
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cpus < 2:
        return False
    threading = sys.modules.get("threading")  # never imported: no threads
    return threading is None or threading.active_count() == 1


class Pending(Generic[T]):
    """The result of `fn`, computed by a child process."""

    def __init__(self, fn: Callable[[], T]) -> None:
        self._fn = fn
        self._outcome: tuple[int, Any] | None = None
        self._closed = False
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            os.close(read_fd)
            _child(fn, write_fd)
        os.close(write_fd)
        self._pid = pid
        self._read_fd = read_fd

    def result(self) -> T:
        """Waits for the child. Re-raises a ServiceTagsError `fn` raised there."""
        if self._outcome is None:
            self._outcome = self._collect()
        kind, value = self._outcome
        if kind == _ERROR:
            raise ServiceTagsError(value)
        result: T = value
        return result

    def close(self) -> None:
        """Stop the child if its result was never asked for, and reap it."""
        if self._closed:
            return
        self._closed = True
        if self._outcome is None:
            import signal  # only when cancelling

            os.kill(self._pid, signal.SIGKILL)
            if self._read_fd >= 0:  # not if collecting raised (the fallback run failed)
                os.close(self._read_fd)
                self._read_fd = -1
            self._outcome = (_ERROR, "cancelled")
        _reap(self._pid)

    def _collect(self) -> tuple[int, Any]:
        read_fd, self._read_fd = self._read_fd, -1  # closed below, whatever happens next
        with open(read_fd, "rb", closefd=True) as pipe:
            data = pipe.read()
        # The result is complete when its length says so; the child's exit status is not
        # waited for here (unmapping its memory takes a few ms, off the critical path).
        size = int.from_bytes(data[:_SIZE], "big")
        if len(data) == _SIZE + size > _SIZE:
            try:
                outcome: tuple[int, Any] = marshal.loads(data[_SIZE:])
                return outcome
            except (EOFError, ValueError, TypeError):  # pragma: no cover - cannot happen
                pass
        try:  # the child died: do the work here
            return _OK, self._fn()
        except ServiceTagsError as exc:
            return _ERROR, str(exc)


_SIZE = 8  # bytes of the length prefix
_unreaped: list[int] = []


def _reap(pid: int) -> None:
    """Reap `pid` if it has exited, else leave it for the next call: whoever forks next (or
    the end of this process) collects it, and nobody waits for a child to unmap its memory."""
    _unreaped.append(pid)
    for waiting in list(_unreaped):
        try:
            done, _ = os.waitpid(waiting, os.WNOHANG)
        except ChildProcessError:  # pragma: no cover - reaped by someone else
            done = waiting
        if done:
            _unreaped.remove(waiting)


def _child(fn: Callable[[], Any], write_fd: int) -> None:
    code = _CHILD_FAILED
    try:
        try:
            outcome: tuple[int, Any] = (_OK, fn())
        except ServiceTagsError as exc:
            outcome = (_ERROR, str(exc))
        data = marshal.dumps(outcome)
        with open(write_fd, "wb", closefd=True) as pipe:
            pipe.write(len(data).to_bytes(_SIZE, "big") + data)
        code = 0
    finally:
        # Straight out: no atexit handlers, no flushing of stdio buffers copied from the parent.
        os._exit(code)
