"""Where generated data sets and derived statistics are kept between runs.

Generated stand-ins (JPEG trees, zarr stores) cost seconds to write, so tasks write them once and
reuse them; every task resolves the same root so that one variable moves them all.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root(name: str, override: str | Path = "") -> Path:
    """``override`` if given, else ``$JOULEBENCH_CACHE``, ``$XDG_CACHE_HOME/joulebench`` or
    ``~/.cache/joulebench``; then ``name`` below it (one folder per task)."""
    if override:
        return Path(override).expanduser() / name
    env = os.environ.get("JOULEBENCH_CACHE")
    if env:
        return Path(env).expanduser() / name
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "joulebench" / name
