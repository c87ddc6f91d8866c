"""Crash points for tests of at-least-once behaviour.

`SERVICETAGS_CRASH_AT=<name>` makes the process kill itself with SIGKILL when it reaches that
point, exactly as a node failure would (no cleanup, no finally blocks). Names in use:
`after_snapshot`, `after_report`, `after_retire`, `before_delete`, `after_outcome` (worker);
`before_send` (claimed, not sent) and `after_send` (sent, not marked) (notifier);
`after_impact_records` (impact step). `SERVICETAGS_STOP_AT=<name>` stops it (SIGSTOP) there
instead, until a SIGCONT.
Never set in production; reading one environment variable per point costs nothing.
"""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    if os.environ.get("SERVICETAGS_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("SERVICETAGS_STOP_AT") == name:
        # A stalled process (a long GC pause, a throttled container): its lease stops being
        # extended. The test resumes it with SIGCONT.
        os.kill(os.getpid(), signal.SIGSTOP)
