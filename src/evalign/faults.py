"""Deterministic fault injection, for the kill/resume checks.

``EVALIGN_KILL_AT=POINT:N`` makes the process SIGKILL itself the N-th time it passes POINT
(a prefix match; ``POINT`` alone means the first time), so a test can kill a run exactly inside
a given stage. Points:

* ``stage:<name>:begin`` — a stage was marked running, before any of its work;
* ``stage:<name>:end`` — its work is done, before it is marked done;
* ``commit:<table>`` — right after a cache transaction (generations, rewards, judgments);
* ``checkpoint:written`` — a checkpoint is on disk in its temporary directory, not yet renamed.

Unset (the normal case), :func:`point` costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_passed: Counter[str] = Counter()


def point(name: str) -> None:
    spec = os.environ.get("EVALIGN_KILL_AT")
    if not spec:
        return
    target, _, count = spec.rpartition(":")
    if not count.isdigit():
        target, count = spec, "1"
    if not name.startswith(target):
        return
    _passed[target] += 1
    if _passed[target] >= int(count):
        os.kill(os.getpid(), signal.SIGKILL)
