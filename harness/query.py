"""Parameterised queries over the store: filters name a known column and bind their values."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import duckdb
import pandas as pd

from joulebench.harness.params import SpecError
from joulebench.harness.store import Store

OPERATORS = ("!=", "<=", ">=", "=", "<", ">")
DEFAULT_COLUMNS = ("run_key", "task", "method", "model", "preset", "seed", "status", "primary_metric",
                   "primary_value", "attempts", "train_s", "train_energy_j", "energy_source", "co2_g",
                   "samples", "gradient_updates", "finished_at")


def parse_filter(text: str, columns: set[str]) -> tuple[str, str, str]:
    for op in OPERATORS:
        if op in text:
            col, value = (part.strip() for part in text.split(op, 1))
            break
    else:
        raise SpecError(f"filter {text!r} needs one of {', '.join(OPERATORS)}")
    if col not in columns:
        raise SpecError(f"unknown column {col!r} in filter; see `joulebench results --format json` for columns")
    return col, op, value


def typed_value(con: duckdb.DuckDBPyConnection, col: str, typ: str, value: str) -> object:
    """The filter's value as the column's type, or a one-line error naming what was expected."""
    try:
        got = con.execute(f"SELECT TRY_CAST(? AS {typ})", [value]).fetchone()[0]
    except duckdb.Error:
        got = None
    if got is None:
        hint = " (e.g. 2026-01-31 or 2026-01-31 12:00)" if "TIMESTAMP" in typ or "DATE" in typ else ""
        raise SpecError(f"filter on {col}: {value!r} is not a {typ.lower()}{hint}")
    return got


def query_runs(root: Path, where: list[str], columns: str | None = None, limit: int | None = 50,
               table: str = "runs") -> pd.DataFrame:
    if limit is not None and limit < 0:
        raise SpecError(f"--limit must be 0 (no limit) or more, not {limit}")
    store = Store(root)
    con = store.connect()
    types = {r[0]: r[1] for r in con.execute(f"DESCRIBE {table}").fetchall()}
    clauses, values = [], []
    for text in where:
        col, op, value = parse_filter(text, set(types))
        clauses.append(f'"{col}" {op} ?')
        values.append(typed_value(con, col, types[col], value))
    if columns:
        wanted = [c.strip() for c in columns.split(",") if c.strip()]
        unknown = [c for c in wanted if c not in types]
        if unknown:
            raise SpecError(f"unknown columns {unknown}")
    elif table == "runs":
        wanted = [c for c in DEFAULT_COLUMNS if c in types]
    else:
        wanted = sorted(types, key=lambda c: not re.match(r"task|method|preset", c))
    sql = f"SELECT {', '.join(chr(34) + c + chr(34) for c in wanted)} FROM {table}"
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    if table == "runs":
        sql += " ORDER BY finished_at DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    frame = store.execute(sql, values, con=con).df()
    for path, why in store.bad_files:
        print(f"warning: skipped {path}: {why}", file=sys.stderr)
    return frame
