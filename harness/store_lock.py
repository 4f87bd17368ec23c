"""Lock files for compaction and per-run claims, made for shared file systems.

A lock is a file created with ``O_CREAT|O_EXCL`` (atomic on local disks, NFSv3+ and Lustre, unlike
``fcntl`` locks, which NFS serves only through lockd and which die silently with a client). It
holds its owner, host, pid and a random token; a thread touches it every ``heartbeat_s``. A lock
is stale when its owner's process is gone (same host) or its mtime is older than ``stale_s``
(other hosts: this assumes clocks within a fraction of ``stale_s``, as NTP keeps cluster nodes).
A stale lock is renamed aside before it is broken and put back if it turned out to be fresh, so
two processes breaking it at once cannot both win.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any


def default_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # half-written by a creator that died: judged by age alone


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LockFile:
    """An exclusive lock file; ``acquire`` never blocks. Use as a context manager after acquiring."""

    def __init__(self, path: Path, owner: str | None = None, stale_s: float = 600.0,
                 heartbeat_s: float = 30.0) -> None:
        self.path, self.owner = Path(path), owner or default_owner()
        self.stale_s, self.heartbeat_s = stale_s, heartbeat_s
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._break_if_stale():
                    return False
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump({"owner": self.owner, "host": socket.gethostname(), "pid": os.getpid(),
                           "token": self.token, "since": time.time()}, fh)
                fh.flush()
                os.fsync(fh.fileno())
            self._beat = threading.Thread(target=self._heartbeat, daemon=True, name=f"lock {self.path.name}")
            self._beat.start()
            return True
        return False

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock now (None: nobody)."""
        return _read(self.path)

    def is_stale(self, info: dict[str, Any]) -> bool:
        if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int):
            if not _pid_alive(info["pid"]):
                return True
        try:
            return time.time() - self.path.stat().st_mtime > self.stale_s
        except FileNotFoundError:
            return True

    def _break_if_stale(self) -> bool:
        info = _read(self.path)
        if info is None:
            return True  # released meanwhile: try again
        if not self.is_stale(info):
            return False
        aside = self.path.with_name(f".{self.path.name}.broken-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True
        moved = _read(aside) or {}
        if moved.get("token") != info.get("token"):  # took someone's fresh lock: give it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
            aside.unlink(missing_ok=True)
            return False
        aside.unlink(missing_ok=True)
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if not self.held():
                return
            try:
                os.utime(self.path)
            except FileNotFoundError:
                return

    def held(self) -> bool:
        return (_read(self.path) or {}).get("token") == self.token

    def release(self) -> None:
        self._stop.set()
        if self.held():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> LockFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
