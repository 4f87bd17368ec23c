"""LTSF data: the published CSV layouts and splits, and an ETT-shaped generator for tests and demos.

The split protocol follows the Informer/Autoformer/DLinear code that every LTSF paper reports on:
ETT hourly files use 12/4/4 months (ETT minutely the same ×4), every other data set 70/10/20;
the validation and test parts start ``seq_len`` rows before their border so that their first
window predicts the first row after the border; a StandardScaler is fit on the training part
only, and metrics are computed on scaled values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from joulebench.harness.data_checks import refuse_non_finite

# name → (file name, split rule); rule "etth"/"ettm" = fixed month borders, "ratio" = 70/10/20
DATASETS: dict[str, tuple[str, str]] = {
    "ETTh1": ("ETTh1.csv", "etth"), "ETTh2": ("ETTh2.csv", "etth"),
    "ETTm1": ("ETTm1.csv", "ettm"), "ETTm2": ("ETTm2.csv", "ettm"),
    "electricity": ("electricity.csv", "ratio"), "traffic": ("traffic.csv", "ratio"),
    "weather": ("weather.csv", "ratio"), "exchange": ("exchange_rate.csv", "ratio"),
    "ili": ("national_illness.csv", "ratio"),
}
SPLITS = ("train", "val", "test")
ETT_COLUMNS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")


def borders(n_rows: int, rule: str, seq_len: int) -> dict[str, tuple[int, int]]:
    """Row ranges [start, end) of each split, validation and test starting seq_len early."""
    if rule in ("etth", "ettm"):
        month = 30 * 24 * (4 if rule == "ettm" else 1)
        b1 = [0, 12 * month - seq_len, 16 * month - seq_len]
        b2 = [12 * month, 16 * month, 20 * month]
        if n_rows < b2[2]:
            raise ValueError(f"an ETT file needs at least {b2[2]} rows for its splits, got {n_rows}")
    else:
        n_train, n_test = int(n_rows * 0.7), int(n_rows * 0.2)
        n_val = n_rows - n_train - n_test
        b1 = [0, n_train - seq_len, n_rows - n_test - seq_len]
        b2 = [n_train, n_train + n_val, n_rows]
    return {split: (b1[i], b2[i]) for i, split in enumerate(SPLITS)}


def read_csv(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    if "date" not in frame.columns:
        raise ValueError(f"{path} has no 'date' column: expected the LTSF layout (date, features..., target)")
    frame["date"] = pd.to_datetime(frame["date"])
    refuse_non_finite(frame.drop(columns=["date"]), path)
    return frame


def locate(dataset: str, data_dir: str) -> Path:
    """The user's file for ``dataset``, or a FileNotFoundError that says what to put where."""
    file_name = DATASETS[dataset][0]
    if not data_dir:
        raise FileNotFoundError(
            f"dataset {dataset} needs its CSV: pass --task-param data_dir=DIR with DIR/{file_name} "
            f"(see data_cards/ltsf.md for where to obtain it)")
    path = Path(data_dir).expanduser() / file_name
    if not path.is_file():
        raise FileNotFoundError(f"expected {path} for dataset {dataset} (see data_cards/ltsf.md)")
    return path


def make_ett_like(n_rows: int, seed: int = 0, start: str = "2016-07-01") -> pd.DataFrame:
    """An ETT-shaped synthetic series: 6 load columns and oil temperature (OT), hourly.

    Loads share daily and weekly cycles with channel-specific phases, a slow trend and AR(1) noise;
    OT follows a lagged, smoothed mix of the loads plus a yearly cycle, as in the transformer data.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(n_rows, dtype=np.float64)
    daily, weekly, yearly = 2 * np.pi * t / 24, 2 * np.pi * t / (24 * 7), 2 * np.pi * t / (24 * 365)
    trend = np.cumsum(rng.normal(0, 0.02, n_rows))
    cols = {}
    for i, name in enumerate(ETT_COLUMNS[:-1]):
        noise = np.zeros(n_rows)
        eps = rng.normal(0, 0.3, n_rows)
        for k in range(1, n_rows):
            noise[k] = 0.8 * noise[k - 1] + eps[k]
        level = 5 + 3 * i % 7
        cols[name] = (level + 2.0 * np.sin(daily + 0.4 * i) + 0.8 * np.sin(2 * daily + i)
                      + 1.2 * np.sin(weekly + 0.2 * i) + trend * (1 + 0.1 * i) + noise)
    loads = np.mean([cols[c] for c in ETT_COLUMNS[:-1]], axis=0)
    kernel = np.exp(-np.arange(24) / 6.0)
    smoothed = np.convolve(loads, kernel / kernel.sum(), mode="full")[:n_rows]
    cols["OT"] = 15 + 1.5 * smoothed + 8 * np.sin(yearly) + rng.normal(0, 0.3, n_rows)
    dates = pd.date_range(start, periods=n_rows, freq="h")
    return pd.DataFrame({"date": dates, **{k: np.round(v, 3) for k, v in cols.items()}})


def time_features(dates: pd.Series) -> np.ndarray:
    """Calendar features in [-0.5, 0.5] (the "timeF" encoding of the LTSF code, hourly)."""
    d = pd.DatetimeIndex(dates)
    return np.stack([d.hour / 23.0 - 0.5, d.day_of_week / 6.0 - 0.5, (d.day - 1) / 30.0 - 0.5,
                     (d.day_of_year - 1) / 365.0 - 0.5], axis=1).astype(np.float32)


@dataclass
class Scaler:
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, values: np.ndarray) -> Scaler:
        std = values.std(axis=0)
        return cls(values.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, values: np.ndarray) -> np.ndarray:
        return ((values - self.mean) / self.std).astype(np.float32)


class WindowDataset(Dataset):
    """Sliding windows over one split: input ``seq_len`` rows, target the next ``pred_len`` rows.

    Items carry ``index`` (for methods that keep per-sample state) and the calendar features of the
    input and of the decoder span (``label_len`` known rows + ``pred_len`` future rows).
    """

    def __init__(self, values: np.ndarray, marks: np.ndarray, seq_len: int, label_len: int,
                 pred_len: int) -> None:
        self.values = torch.from_numpy(values)
        self.marks = torch.from_numpy(marks)
        self.seq_len, self.label_len, self.pred_len = seq_len, label_len, pred_len
        self.n = len(values) - seq_len - pred_len + 1
        if self.n <= 0:
            raise ValueError(f"a split of {len(values)} rows is too short for seq_len={seq_len} "
                             f"and pred_len={pred_len}")

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s, e = i, i + self.seq_len
        return {"index": torch.tensor(i), "x": self.values[s:e], "x_mark": self.marks[s:e],
                "y": self.values[e:e + self.pred_len],
                "y_mark": self.marks[e - self.label_len:e + self.pred_len]}


def build_splits(frame: pd.DataFrame, rule: str, seq_len: int, label_len: int, pred_len: int,
                 features: str, target: str) -> tuple[dict[str, WindowDataset], Scaler]:
    if target not in frame.columns:
        raise ValueError(f"target column {target!r} not in {list(frame.columns)}")
    columns = [c for c in frame.columns if c not in ("date", target)] + [target]
    if features == "S":
        columns = [target]
    values = frame[columns].to_numpy(dtype=np.float64)
    marks = time_features(frame["date"])
    ranges = borders(len(frame), rule, seq_len)
    train_start, train_end = ranges["train"]
    scaler = Scaler.fit(values[train_start:train_end])
    scaled = scaler.transform(values)
    datasets = {split: WindowDataset(scaled[a:b], marks[a:b], seq_len, label_len, pred_len)
                for split, (a, b) in ranges.items()}
    return datasets, scaler
