"""Real SIGKILLs inside stages of a real `evalign ablate` run, then resume (tools/fault_inject.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from evalign import faults

ROOT = Path(__file__).resolve().parents[1]


def test_kill_points_match_by_prefix_and_count(monkeypatch):
    killed = []
    monkeypatch.setattr(faults.os, "kill", lambda pid, sig: killed.append(sig))
    monkeypatch.setattr(faults, "_passed", faults.Counter())
    monkeypatch.setenv("EVALIGN_KILL_AT", "commit:rewards:2")
    faults.point("commit:generations")
    faults.point("commit:rewards")
    assert not killed
    faults.point("commit:rewards")
    assert killed == [faults.signal.SIGKILL]
    monkeypatch.delenv("EVALIGN_KILL_AT")
    faults.point("commit:rewards")
    assert len(killed) == 1
    monkeypatch.setenv("EVALIGN_KILL_AT", "stage:train:begin")  # no count: the first pass
    faults.point("stage:train:end")
    assert len(killed) == 1
    faults.point("stage:train:begin")
    assert len(killed) == 2


@pytest.mark.timeout(900)
def test_killed_runs_resume_to_exactly_the_uninterrupted_result(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "fault_inject.py"), "--quick", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=880, env={**os.environ, "EVALIGN_QUIET": "1"},
    )
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    assert "3 kills in 1 runs; 1/1 resumed runs identical" in out.stdout, out.stdout
