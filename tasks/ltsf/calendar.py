"""Calendar helpers for cycle-aware forecasters: the primary cycle of a series and day types.

Day types follow ReCycle (Weyrauch et al.): 0 = workday (Monday-Friday), 1 = Saturday,
2 = Sunday or public holiday. Holidays come from the ``holidays`` package for the country the user
names (``holiday_country``); without one, only Sundays count as type 2.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

WORKDAY, SATURDAY, SUNDAY_HOLIDAY = 0, 1, 2
N_DAY_TYPES = 3


def day_types(dates: pd.Series | pd.DatetimeIndex, country: str = "") -> np.ndarray:
    """The day type of every timestamp (int64), holidays of ``country`` counted as Sundays."""
    index = pd.DatetimeIndex(dates)
    dow = np.asarray(index.day_of_week)
    out = np.where(dow < 5, WORKDAY, np.where(dow == 5, SATURDAY, SUNDAY_HOLIDAY)).astype(np.int64)
    if country:
        import holidays

        years = sorted(set(int(y) for y in index.year))
        try:
            calendar = holidays.country_holidays(country, years=years)
        except NotImplementedError:
            raise ValueError(f"holiday_country {country!r} is not known to the holidays package "
                             "(use an ISO 3166 alpha-2 code such as DE, CN, US)") from None
        is_holiday = np.fromiter((d in calendar for d in index.date), dtype=bool, count=len(index))
        out[is_holiday] = SUNDAY_HOLIDAY
    return out


def day_types_from_marks(marks):
    """Day types from the "timeF" calendar features (column 1 = day of week / 6 - 0.5).

    A fallback for callers that pass only ``x_mark``/``y_mark``: Sundays are type 2, holidays are
    not known here.
    """
    import torch

    dow = torch.round((marks[..., 1] + 0.5) * 6).long()
    return torch.where(dow < 5, 0, torch.where(dow == 5, 1, 2))


def rows_per_day(dates: pd.Series | pd.DatetimeIndex) -> float:
    """Rows per day from the median spacing of the timestamps (24 for hourly data)."""
    index = pd.DatetimeIndex(dates)
    if len(index) < 2:
        return 0.0
    step = pd.Series(index[1:] - index[:-1]).median()
    seconds = step.total_seconds()
    return 86400.0 / seconds if seconds > 0 else 0.0


def infer_cycle(dates: pd.Series | pd.DatetimeIndex) -> int:
    """The primary cycle in rows: one day for sub-daily data, a week for daily, a year for weekly."""
    per_day = rows_per_day(dates)
    if per_day >= 2:
        return int(round(per_day))          # hourly 24, 15-minute 96, 10-minute 144
    if per_day >= 0.9:
        return 7                             # daily data (exchange rates): the week
    if per_day > 0:
        return 52                            # weekly data (ILI): the year
    return 1


class DayTypedWindows:
    """A window data set whose items also carry ``x_day``/``y_day``: the day types of the input rows
    and of the ``pred_len`` forecast rows (calendar facts, known in advance like ``y_mark``).

    Every other attribute (``values``, ``seq_len``, ...) is the wrapped data set's.
    """

    def __init__(self, windows, days: np.ndarray) -> None:
        import torch

        self.windows = windows
        self.days = torch.from_numpy(np.ascontiguousarray(days, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict:
        item = self.windows[i]
        end = i + self.windows.seq_len
        item["x_day"] = self.days[i:end]
        item["y_day"] = self.days[end:end + self.windows.pred_len]
        return item

    def __getattr__(self, name: str):
        if name in ("windows", "days") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.windows, name)
