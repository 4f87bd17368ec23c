"""Claims and the compaction lock: O_EXCL lock files with owner, heartbeat and stale expiry."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from joulebench.harness.params import SpecError
from joulebench.harness.store import Store
from joulebench.harness.store_lock import LockFile


def test_of_eight_drivers_claiming_one_run_at_once_exactly_one_wins(results: Path) -> None:
    """Threads released by one barrier race for the O_EXCL create (processes race the same way)."""
    gate, won = threading.Barrier(8), []

    def contend() -> None:
        gate.wait()
        claim = Store(results).claim("k")
        if claim is not None:
            won.append(claim)

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(won) == 1
    won[0].release()
    assert not (results / "claims" / "k.claim").exists()  # released by its owner


def test_a_claim_of_a_dead_process_on_this_host_is_taken_over(results: Path) -> None:
    path = results / "claims" / "k.claim"
    path.parent.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    path.write_text(json.dumps({"owner": "x", "host": socket.gethostname(), "pid": dead.pid, "token": "t"}))
    claim = Store(results).claim("k")
    assert claim is not None and json.loads(path.read_text())["pid"] == os.getpid()
    claim.release()


def test_a_live_claim_of_another_host_holds_until_it_stops_beating(results: Path) -> None:
    path = results / "claims" / "k.claim"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"owner": "node7:1", "host": "node7", "pid": 1, "token": "t"}))
    assert Store(results).claim("k", stale_s=60) is None
    old = time.time() - 120
    os.utime(path, (old, old))
    claim = Store(results).claim("k", stale_s=60)
    assert claim is not None
    claim.release()


def test_the_heartbeat_keeps_a_long_claim_fresh(results: Path) -> None:
    claim = Store(results).claim("k", stale_s=1.0, heartbeat_s=0.1)
    assert claim is not None
    with claim:
        time.sleep(1.5)
        assert time.time() - claim.path.stat().st_mtime < 1.0
        assert Store(results).claim("k", stale_s=1.0) is None


def test_a_released_lock_taken_over_meanwhile_is_not_removed(tmp_path: Path) -> None:
    first = LockFile(tmp_path / "l.lock", stale_s=0.0)
    assert first.acquire()
    second = LockFile(tmp_path / "l.lock", stale_s=0.0)  # first counts as stale at once
    os.utime(first.path, (time.time() - 10, time.time() - 10))
    first_pid_file = json.loads(first.path.read_text())
    first_pid_file["host"] = "elsewhere"
    first.path.write_text(json.dumps(first_pid_file))
    assert second.acquire()
    first.release()  # not its lock any more
    assert second.held()
    second.release()


def test_a_second_compaction_while_one_runs_is_a_one_line_refusal(results: Path) -> None:
    Store(results).write_run({"run_key": "k", "task": "ltsf", "method": "backprop", "status": "ok"})
    lock = LockFile(results / ".locks" / "compact.lock")
    assert lock.acquire()
    with lock, pytest.raises(SpecError, match="another compaction is running"):
        Store(results).compact()
    assert Store(results).compact()["runs"] == 1
