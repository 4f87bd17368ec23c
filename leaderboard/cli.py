"""``joulebench leaderboard``: start the Streamlit app, bound to loopback, telemetry off."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from joulebench.harness.cli import add_common, results_dir

APP = Path(__file__).with_name("app.py")


def streamlit_command(results: Path, port: int, address: str,
                      plugins: list[str] | None = None) -> list[str]:
    """The app gets the store and the plugins (so plugin tasks and methods show their defaults)."""
    plugin_args = [a for p in plugins or () for a in ("--plugin", str(Path(p).resolve()))]
    return [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
            "--server.address", address, "--server.port", str(port),
            "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
            "--client.toolbarMode", "viewer",
            "--", "--results", str(results), *plugin_args]


def cmd_leaderboard(args: argparse.Namespace) -> int:
    results = results_dir(args).resolve()
    print(f"leaderboard over {results} on http://{args.address}:{args.port}  (Ctrl-C stops it)", flush=True)
    env = {**os.environ, "JOULEBENCH_RESULTS": str(results)}
    command = streamlit_command(results, args.port, args.address, args.plugin)
    # exec, not a child: SIGTERM/SIGINT from a service manager or `kill` reach Streamlit itself,
    # which stops its server and frees the port (a waiting parent would die and orphan it)
    os.execve(command[0], command, env)
    return 0  # not reached


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("leaderboard", help="start the Streamlit leaderboard over a result store")
    add_common(p)
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default="127.0.0.1", help="bind address (default: loopback only)")
    p.set_defaults(func=cmd_leaderboard)
