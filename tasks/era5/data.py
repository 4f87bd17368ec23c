"""ERA5 in the WeatherBench2 layout: open lazily, select channels, subsample to 6 h, split by year.

The store is read through xarray without dask (``chunks=None``): each read indexes the backend
arrays for the time steps it needs, so a 0.25° store of several TB is never loaded whole. A split
small enough (``preload_mb``) is read once into memory, through the same ``Source.read``.

Expected layout (WeatherBench2, ``gs://weatherbench2/datasets/era5/*.zarr``): dims ``time``,
``level`` (hPa), ``latitude``, ``longitude`` (in any order); surface variables over
(time, latitude, longitude), pressure-level variables over (time, level, latitude, longitude);
``time`` sorted, 1-hourly or 6-hourly. ``relative_humidity`` may be missing when
``specific_humidity`` and ``temperature`` are there: it is then derived (IFS saturation formula).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from joulebench.tasks.era5.channels import Channel

LAYOUT = ("a WeatherBench2-layout ERA5 zarr store or netCDF file with dims time, level (hPa), "
          "latitude, longitude and variables such as 2m_temperature, geopotential, temperature "
          "(e.g. 1959-2023_01_10-wb13-6h-1440x721_with_derived_variables.zarr; data_cards/era5.md)")
ALIASES = {"lat": "latitude", "lon": "longitude", "valid_time": "time",
           "pressure_level": "level", "isobaricInhPa": "level"}


def open_store(path: str | Path) -> xr.Dataset:
    """Open a zarr directory or a netCDF file lazily (no dask), or say what was expected there."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"ERA5 store not found at {path}: put there {LAYOUT}")
    if path.is_dir():
        ds = xr.open_zarr(path, chunks=None, decode_timedelta=False)
    else:
        try:
            ds = xr.open_dataset(path, chunks=None, decode_timedelta=False)
        except ValueError as exc:  # no engine for HDF5-based netCDF4
            raise ValueError(f"cannot read {path} ({exc}); netCDF4/HDF5 files need "
                             "`pip install h5netcdf`, or convert the file to zarr") from None
    return ds.rename({k: v for k, v in ALIASES.items() if k in ds.dims or k in ds.coords})


def _check_layout(ds: xr.Dataset, channels: tuple[Channel, ...], path: str) -> None:
    for dim in ("time", "latitude", "longitude"):
        if dim not in ds.dims:
            raise ValueError(f"{path} has no dimension {dim!r} (dims: {', '.join(map(str, ds.dims))}); "
                             f"expected {LAYOUT}")
    for ch in channels:
        names = _sources(ds, ch)
        if names is None:
            raise ValueError(f"{path} lacks variable {ch.variable!r} needed for channel {ch.name}; "
                             f"expected {LAYOUT}")
        for name in names:
            if ch.level is not None:
                if "level" not in ds[name].dims:
                    raise ValueError(f"{path}: {name} has no 'level' dimension for channel {ch.name}")
                if not np.isin(ch.level, ds["level"].values):
                    raise ValueError(f"{path}: level {ch.level} hPa of channel {ch.name} is not in "
                                     f"the store (levels: {ds['level'].values.tolist()})")


def _sources(ds: xr.Dataset, ch: Channel) -> tuple[str, ...] | None:
    """The variables a channel is read from: itself, or q and T for a derived relative humidity."""
    if ch.variable in ds.data_vars:
        return (ch.variable,)
    if ch.variable == "relative_humidity" and {"specific_humidity", "temperature"} <= set(ds.data_vars):
        return ("specific_humidity", "temperature")
    return None


def relative_humidity(q: np.ndarray, t: np.ndarray, p_hpa: float | np.ndarray) -> np.ndarray:
    """Relative humidity (%) from specific humidity (kg/kg) and temperature (K) at pressure p,
    saturation over water as in the IFS (Tetens: 611.21 Pa, 17.502, 32.19 K)."""
    p = p_hpa * 100.0
    e_sat = 611.21 * np.exp(17.502 * (t - 273.16) / (t - 32.19))
    e = q * p / (0.621981 + 0.378019 * q)
    return 100.0 * e / e_sat


def specific_humidity(rh: np.ndarray, t: np.ndarray, p_hpa: float | np.ndarray) -> np.ndarray:
    """The inverse of ``relative_humidity`` (for the generator, so both variables agree)."""
    p = p_hpa * 100.0
    e = rh / 100.0 * 611.21 * np.exp(17.502 * (t - 273.16) / (t - 32.19))
    return 0.621981 * e / (p - 0.378019 * e)


def _as_index(positions: np.ndarray) -> slice | np.ndarray:
    """An arithmetic run of positions as a slice (one contiguous read per chunk), else the array."""
    if len(positions) > 1:
        step = int(positions[1] - positions[0])
        if step > 0 and np.all(np.diff(positions) == step):
            return slice(int(positions[0]), int(positions[-1]) + 1, step)
    elif len(positions) == 1:
        return slice(int(positions[0]), int(positions[0]) + 1)
    return positions


class Source:
    """An opened store: the selected channels at every ``step_hours`` step, read on demand."""

    def __init__(self, path: str | Path, channels: tuple[Channel, ...], step_hours: int = 6) -> None:
        self.path = str(Path(path).expanduser())
        self.ds = open_store(self.path)
        self.channels = channels
        _check_layout(self.ds, channels, self.path)
        times = pd.DatetimeIndex(self.ds["time"].values)
        if not times.is_monotonic_increasing:
            raise ValueError(f"{self.path}: time is not sorted; sort the store by time first")
        keep = (times.hour % step_hours == 0) & (times.minute == 0) & (times.second == 0)
        self.positions = np.flatnonzero(keep)
        self.times = times[keep]
        self.step_hours = step_hours
        if len(self.times) == 0:
            raise ValueError(f"{self.path}: no time step falls on a multiple of {step_hours} h")
        self.lat = np.asarray(self.ds["latitude"].values, dtype=np.float64)
        self.lon = np.asarray(self.ds["longitude"].values, dtype=np.float64)
        self.time_chunk = store_time_chunk(self.ds, [n for ch in channels for n in _sources(self.ds, ch)])

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.lat), len(self.lon)

    def _field(self, name: str, levels: list[int] | None, index) -> np.ndarray:
        """(time, lat, lon) of a surface variable, or (time, level, lat, lon) at ``levels``."""
        da = self.ds[name]
        if levels is None:
            return np.asarray(da.isel(time=index).transpose("time", "latitude", "longitude").values,
                              dtype=np.float32)
        where = np.flatnonzero(np.isin(self.ds["level"].values, levels))    # store order, ascending
        found = self.ds["level"].values[where]
        order = [int(np.flatnonzero(found == lvl)[0]) for lvl in levels]
        da = da.isel(time=index, level=_as_index(where)).transpose("time", "level", "latitude", "longitude")
        return np.asarray(da.values, dtype=np.float32)[:, order]

    def read(self, steps: np.ndarray) -> np.ndarray:
        """Channels at the given steps (indices into ``times``): float32 (n, C, lat, lon).
        One read per variable (all its levels at once)."""
        index = _as_index(self.positions[np.asarray(steps, dtype=np.int64)])
        out = np.empty((len(np.atleast_1d(steps)), len(self.channels), *self.shape), np.float32)
        groups: dict[tuple[str, ...], list[int]] = {}
        for c, ch in enumerate(self.channels):
            groups.setdefault(_sources(self.ds, ch), []).append(c)
        for names, members in groups.items():
            levels = [self.channels[c].level for c in members]
            if levels[0] is None:
                for c in members:
                    out[:, c] = self._field(self.channels[c].variable, None, index)
            elif len(names) == 1:
                out[:, members] = self._field(names[0], levels, index)
            else:
                q, t = (self._field(n, levels, index) for n in names)
                out[:, members] = relative_humidity(q, t, np.asarray(levels, float)[None, :, None, None])
        return out

    def chunk_of(self, steps: np.ndarray) -> np.ndarray:
        """The store's time chunk holding each step (steps index ``times``)."""
        return self.positions[np.asarray(steps, dtype=np.int64)] // self.time_chunk

    def split_steps(self, years: tuple[int, int]) -> tuple[int, int]:
        """[first, last + 1) step indices of the years (inclusive range), or a clear error."""
        inside = np.flatnonzero((self.times.year >= years[0]) & (self.times.year <= years[1]))
        if len(inside) == 0:
            have = f"{self.times[0]:%Y-%m-%d} to {self.times[-1]:%Y-%m-%d}"
            raise ValueError(f"{self.path} holds no time step in {years[0]}-{years[1]} (it has {have})")
        return int(inside[0]), int(inside[-1]) + 1

    def window_starts(self, span: tuple[int, int], length: int) -> np.ndarray:
        """Steps s in the span whose s+1..s+length follow at exact ``step_hours`` spacing inside it."""
        lo, hi = span
        starts = np.arange(lo, hi - length)
        if len(starts) == 0:
            return starts
        t = self.times.asi8 // 10**9  # seconds
        ok = t[starts + length] - t[starts] == length * self.step_hours * 3600
        for j in range(1, length):
            ok &= t[starts + j] - t[starts] == j * self.step_hours * 3600
        return starts[ok]


def store_time_chunk(ds: xr.Dataset, names: list[str]) -> int:
    """Time steps per stored chunk of the variables read (the largest; 1 when unchunked).
    Reading one step of a chunk decodes all of it, so reads are grouped by these chunks."""
    size = 1
    for name in dict.fromkeys(names):
        da = ds[name]
        chunks = da.encoding.get("chunks") or da.encoding.get("chunksizes")
        if chunks and "time" in da.dims and len(chunks) == len(da.dims):
            size = max(size, int(chunks[da.dims.index("time")]))
    return size


class ChunkReader:
    """``Source.read`` through the store's time chunks: each chunk is decoded once and kept while
    the next reads need it, so consecutive windows (evaluation, ``ChunkShuffle`` order) read each
    chunk once instead of once per sample. Holds at most ``keep`` chunks of the selected channels
    (0.25°, 20 channels: 83 MB per step, so 2 × 16-step chunks = 2.7 GB per loader process)."""

    def __init__(self, source: Source, keep: int = 2) -> None:
        self.source, self.keep = source, keep
        self.chunks: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # chunk → (steps, data)

    def read(self, steps: np.ndarray) -> np.ndarray:
        steps = np.asarray(steps, dtype=np.int64)
        if self.source.time_chunk == 1:
            return self.source.read(steps)
        out = np.empty((len(steps), len(self.source.channels), *self.source.shape), np.float32)
        chunk_ids = self.source.chunk_of(steps)
        for chunk in dict.fromkeys(chunk_ids.tolist()):
            held, data = self._chunk(chunk)
            where = chunk_ids == chunk
            out[where] = data[np.searchsorted(held, steps[where])]
        return out

    def _chunk(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        if chunk in self.chunks:
            self.chunks[chunk] = self.chunks.pop(chunk)  # most recently used last
            return self.chunks[chunk]
        lo = np.searchsorted(self.source.positions, chunk * self.source.time_chunk)
        hi = np.searchsorted(self.source.positions, (chunk + 1) * self.source.time_chunk)
        held = np.arange(lo, hi)
        while len(self.chunks) >= self.keep:
            self.chunks.pop(next(iter(self.chunks)))
        self.chunks[chunk] = (held, self.source.read(held))
        return self.chunks[chunk]


def parse_years(text: str) -> tuple[int, int]:
    """``"1979-2015"`` or ``"2018"`` → an inclusive range of years."""
    parts = [p.strip() for p in str(text).split("-")]
    try:
        years = (int(parts[0]), int(parts[-1]))
    except ValueError:
        raise ValueError(f"years {text!r}: give YYYY or YYYY-YYYY") from None
    if len(parts) > 2 or years[0] > years[1]:
        raise ValueError(f"years {text!r}: give YYYY or YYYY-YYYY with the first year first")
    return years
