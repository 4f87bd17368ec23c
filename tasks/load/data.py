"""Hourly load series: the OPSD/AutoPQ CSV layout, a load-shaped generator, windows and splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from joulebench.harness.data_checks import refuse_non_finite

HORIZON = 24


def read_csv(path: str | Path, time_col: str, target: str) -> pd.DataFrame:
    """A CSV with a time column and a target column (other numeric columns are exogenous)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"load CSV not found at {path}: put an hourly CSV there with a '{time_col}' column and a "
            f"'{target}' column (e.g. Load-BW.csv of the AutoPQ/OPSD layout), or pass -T csv=PATH")
    frame = pd.read_csv(path)
    for col in (time_col, target):
        if col not in frame.columns:
            raise ValueError(f"{path} has no column '{col}' (columns: {list(frame.columns)})")
    frame[time_col] = pd.to_datetime(frame[time_col])
    frame = frame.rename(columns={time_col: "time", target: "target"})
    frame["target"] = frame["target"].astype(float)
    numeric = frame.select_dtypes("number")
    if np.isinf(numeric.to_numpy(dtype=float)).any():
        refuse_non_finite(numeric, path)  # inf is never a gap: name it (NaN gaps are filled below)
    frame["target"] = frame["target"].interpolate().bfill().ffill()
    if frame["target"].isna().any():        # nothing to fill from: a target column of NaN only
        refuse_non_finite(frame[["target"]].rename(columns={"target": target}), path)
    return frame


def make_load(n_rows: int, seed: int, country: str = "DE", start: str = "2018-01-01") -> pd.DataFrame:
    """A load-shaped hourly series: daily and weekly cycles, public holidays, temperature, noise."""
    import holidays

    rng = np.random.default_rng(seed)
    time = pd.date_range(start, periods=n_rows, freq="h")
    hour = time.hour.to_numpy()
    dow = time.day_of_week.to_numpy()
    doy = time.day_of_year.to_numpy()
    hol = holidays.country_holidays(country, years=sorted(set(time.year)))
    is_hol = np.array([d in hol for d in time.date])
    off = (dow >= 5) | is_hol
    daily = 0.25 * np.exp(-0.5 * ((hour - 12) / 4.0) ** 2) + 0.15 * np.exp(-0.5 * ((hour - 19) / 2.0) ** 2)
    daily = daily * np.where(dow == 5, 0.7, 1.0) * np.where(off & (dow != 5), 0.5, 1.0)
    temp = 10 - 10 * np.cos(2 * np.pi * (doy - 15) / 365.25) + 4 * np.sin(2 * np.pi * (hour - 9) / 24)
    temp = temp + np.cumsum(rng.normal(0, 0.3, n_rows)) * 0.1
    heat = 0.012 * np.clip(15 - temp, 0, None) + 0.008 * np.clip(temp - 22, 0, None)
    noise = np.zeros(n_rows)
    eps = rng.normal(0, 0.02, n_rows) * (1 + 0.5 * daily / daily.max())     # heteroscedastic
    for t in range(1, n_rows):
        noise[t] = 0.8 * noise[t - 1] + eps[t]
    load = 1.0 + daily - 0.1 * off + heat + noise
    return pd.DataFrame({"time": time, "target": 40000 * load, "temperature": temp})


def split_ranges(n_samples: int) -> dict[str, tuple[int, int]]:
    """AutoPQ split of the sample windows: test = last 20 %, validation = last 30 % of the rest."""
    n_test = int(round(0.2 * n_samples))
    rest = n_samples - n_test
    n_val = int(round(0.3 * rest))
    return {"train": (0, rest - n_val), "val": (rest - n_val, rest), "test": (rest, n_samples)}


def calendar(time: pd.DatetimeIndex, country: str) -> np.ndarray:
    """Per timestamp: sin/cos of hour, sin/cos of weekday, weekend flag, holiday flag."""
    import holidays

    hol = holidays.country_holidays(country, years=sorted(set(time.year))) if country else {}
    hour, dow = time.hour.to_numpy(), time.day_of_week.to_numpy()
    return np.stack([np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24),
                     np.sin(2 * np.pi * dow / 7), np.cos(2 * np.pi * dow / 7),
                     (dow >= 5).astype(float),
                     np.array([d in hol for d in time.date], dtype=float)], axis=1)


def build_windows(frame: pd.DataFrame, n_lags: int, country: str, exog: str = "") -> dict:
    """Features = the preceding ``n_lags`` target values + calendar of the 24 target hours
    (+ the values of the ``exog`` columns, comma-separated, at the target hours: only columns known
    in advance, such as a day-ahead price); target = next 24 h.

    Windows start every hour. The target is standardised with the training split's statistics.
    """
    y = frame["target"].to_numpy(np.float64)
    cal = calendar(pd.DatetimeIndex(frame["time"]), country)
    extra = [c.strip() for c in exog.split(",") if c.strip()]
    missing = [c for c in extra if c not in frame.columns]
    if missing:
        raise ValueError(f"exog columns {missing} not in the data (columns: {list(frame.columns)})")
    ex = frame[extra].astype(float).interpolate().bfill().ffill().to_numpy() if extra else None
    n = len(y) - n_lags - HORIZON + 1
    if n < 20:
        raise ValueError(f"series of {len(y)} rows is too short for {n_lags} lags + {HORIZON} h")
    ranges = split_ranges(n)
    train_end_row = ranges["train"][1] + n_lags           # rows seen by training inputs
    mean, std = y[:train_end_row].mean(), y[:train_end_row].std() or 1.0
    ys = (y - mean) / std
    idx = np.arange(n)[:, None]
    lags = ys[idx + np.arange(n_lags)]
    target = ys[idx + n_lags + np.arange(HORIZON)]
    cal_f = cal[idx[:, 0] + n_lags][:, :4]                # calendar at the first target hour
    day_f = cal[idx + n_lags + np.arange(HORIZON)][:, :, 4:].max(axis=1)   # weekend/holiday in horizon
    parts = [lags, cal_f, day_f]
    if ex is not None:
        em, es = ex[:train_end_row].mean(0), ex[:train_end_row].std(0) + 1e-9
        exs = (ex - em) / es
        parts.append(exs[idx + n_lags + np.arange(HORIZON)].reshape(n, -1))
    x = np.concatenate(parts, axis=1).astype(np.float32)
    return {"x": x, "y": target.astype(np.float32), "ranges": ranges, "mean": mean, "std": std,
            "exog": extra}


class Windows(Dataset):
    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i], "index": i}
