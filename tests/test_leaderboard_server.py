"""`joulebench leaderboard` under a service manager: SIGTERM or SIGINT stops the Streamlit
server it started and frees the port (a wrapper that only dies itself orphans the server)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Free for a new server: bound as servers bind (SO_REUSEADDR, which Tornado sets), so the
    health check's connection in TIME_WAIT does not count, while a listener still does (Linux)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def wait_http(url: str, seconds: float = 90) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {seconds} s")


def start_leaderboard(results: Path, port: int) -> subprocess.Popen:
    """Started in a session of its own, so the test can see whether anything of it survives."""
    return subprocess.Popen([sys.executable, "-m", "joulebench.harness.cli", "leaderboard", "--results",
                             str(results), "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_command_stops_its_server(results: Path, sig: signal.Signals) -> None:
    port = free_port()
    proc = start_leaderboard(results, port)
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health")
        proc.send_signal(sig)  # to the command only, as `kill PID` or a service manager does
        proc.wait(timeout=30)
        deadline = time.time() + 15
        while (group_alive(proc.pid) or not port_is_free(port)) and time.time() < deadline:
            time.sleep(0.2)
        assert not group_alive(proc.pid), "a process of the leaderboard outlived the signal"
        assert port_is_free(port), f"port {port} still bound after {sig.name}"
    finally:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
