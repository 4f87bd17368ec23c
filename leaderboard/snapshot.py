"""What the leaderboard's first view reads: the cells, the overview and the filters' choices of
one state of the store, persisted beside the store (``<results>/.leaderboard/``, or the cache
root when the results directory is read-only) under the key of that state (its run files'
identities, ``rows.digest``). A new server process over an unchanged store draws its first page
from these three files, without reading a run or aggregating a cell.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from joulebench.harness.cache import cache_root

VERSION = "cells-v2"
"""Bump when the cells or the overview change shape: older snapshots are then ignored."""
KEEP = 3
"""Snapshots kept per store (the newest); older ones are removed when a new one is saved."""
FOLDER = ".leaderboard"


@dataclass
class Snapshot:
    cells: pd.DataFrame
    overview: pd.DataFrame
    choices: dict


def folders(root: Path) -> list[Path]:
    """Beside the store first, then a per-store folder under the cache root."""
    fallback = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]
    return [Path(root) / FOLDER, cache_root("leaderboard") / fallback]


def load(root: Path, key: str) -> Snapshot | None:
    for folder in folders(root):
        try:
            return Snapshot(pd.read_parquet(folder / f"{key}.cells.parquet"),
                            pd.read_parquet(folder / f"{key}.overview.parquet"),
                            json.loads((folder / f"{key}.choices.json").read_text()))
        except (OSError, ValueError):
            continue
    return None


def save(root: Path, key: str, snap: Snapshot) -> Path | None:
    """Best effort (a read-only store and cache only cost the next process the aggregation);
    where it was written."""
    for folder in folders(root):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            write(folder / f"{key}.cells.parquet", lambda p: snap.cells.to_parquet(p, index=False))
            write(folder / f"{key}.overview.parquet", lambda p: snap.overview.to_parquet(p, index=False))
            write(folder / f"{key}.choices.json", lambda p: p.write_text(json.dumps(snap.choices, default=str)))
        except OSError:
            continue
        prune(folder)
        return folder
    return None


def write(path: Path, writer) -> None:
    """To a temporary name, then renamed: a reader never loads half a snapshot file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        writer(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def prune(folder: Path) -> None:
    """Keep the newest ``KEEP`` snapshots (by their choices file, written last)."""
    done = sorted(folder.glob("*.choices.json"), key=mtime, reverse=True)
    for old in done[KEEP:]:
        key = old.name[: -len(".choices.json")]
        for suffix in (".choices.json", ".cells.parquet", ".overview.parquet"):
            (folder / f"{key}{suffix}").unlink(missing_ok=True)


def mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # pruned by another process meanwhile
        return 0.0
