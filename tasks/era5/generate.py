"""A generated stand-in for ERA5: a WeatherBench2-layout zarr store whose weather follows a rule.

Four latent fields (upper and lower flow anomaly, temperature and moisture anomaly) are advected
eastwards by a zonal wind with a jet at ±45° and easterlies at the equator (an exact spectral shift
per latitude row), diffused, relaxed towards each other and stirred by smooth noise. The stored
variables are functions of these fields, of latitude, of season and of local solar time (diurnal
heating in 2 m temperature), with ERA5's names, units and typical magnitudes: geopotential in
m² s⁻², temperatures in K, winds in m s⁻¹ (background jet plus geostrophic anomalies), pressures
in Pa, relative humidity in %, specific humidity consistent with it, column water in kg m⁻².

Each year stores ``days_per_month`` days of every month (all seasons, few steps), and the store is
read back through the same ``data.Source`` as real ERA5. Writing goes to a temporary directory that
is renamed into place, so two processes generating the same store at once both end with it intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from joulebench.harness.cache import cache_root
from joulebench.tasks.era5.data import specific_humidity

EARTH_RADIUS = 6.371e6
SUBSTEP_HOURS = 3
DAMPING_HOURS = 2000.0
GENERATOR_VERSION = 2
"""Bump when the rule changes: it is part of the cache key of generated stores."""
SPIN_UP_HOURS = 30 * 24
LEVEL_TABLE = np.log([50.0, 500.0, 850.0, 1000.0])
"""Pressure levels at which the per-level profiles below are given; others are interpolated in log p."""


@dataclass(frozen=True)
class GenConfig:
    n_lat: int = 32
    n_lon: int = 64
    first_year: int = 2000
    last_year: int = 2003
    days_per_month: int = 8
    step_hours: int = 6
    levels: tuple[int, ...] = (50, 500, 850, 1000)
    noise: float = 1.0
    seed: int = 0

    def key(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True) + f"|{GENERATOR_VERSION}"
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def times(self) -> pd.DatetimeIndex:
        parts = [pd.date_range(f"{y}-{m:02d}-01", periods=self.days_per_month * 24 // self.step_hours,
                               freq=f"{self.step_hours}h")
                 for y in range(self.first_year, self.last_year + 1) for m in range(1, 13)]
        return parts[0].append(parts[1:])


def era5_cache(cache_dir: str = "") -> Path:
    """Where generated stores and statistics go (``era5/`` below the project's cache root)."""
    return cache_root("era5", cache_dir)


def ensure_store(cfg: GenConfig, cache_dir: str = "") -> Path:
    """The generated store for ``cfg``, written once per cache; safe under concurrent callers."""
    path = era5_cache(cache_dir) / f"generated-{cfg.n_lat}x{cfg.n_lon}-{cfg.key()}.zarr"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        write_store(cfg, tmp)
        os.rename(tmp, path)
    except OSError:
        if not path.exists():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


# -- the rule --------------------------------------------------------------------------------------
class Grid:
    def __init__(self, n_lat: int, n_lon: int) -> None:
        self.lat = -90.0 + (np.arange(n_lat) + 0.5) * 180.0 / n_lat  # WB2 equiangular, no poles
        self.lon = np.arange(n_lon) * 360.0 / n_lon
        self.phi = np.deg2rad(self.lat)[:, None]
        self.lam = np.deg2rad(self.lon)[None, :]
        self.k = np.arange(n_lon // 2 + 1)[None, :]
        dist = (self.lat[:, None] - self.lat[None, :]) / 12.0
        kernel = np.exp(-dist**2)
        self.lat_smooth = kernel / kernel.sum(axis=1, keepdims=True)
        self.mixing = min(0.1, 0.001 * (n_lat / 32) ** 2)  # per hour, in grid cells²: same in km²
        self.noise_scale = 1.0
        probe = np.random.default_rng(12345)
        self.noise_scale = float(np.std([smooth_noise(self, probe) for _ in range(16)]))


def angular_speed(lat: np.ndarray) -> np.ndarray:
    """Eastward angular speed of the upper flow, radians per hour: a solid-body part, jets at ±45°
    and equatorial easterlies (8 + 6 - 2 degrees of longitude per 6 h at most)."""
    deg_per_6h = 8.0 + 6.0 * np.exp(-(((np.abs(lat) - 45.0) / 30.0) ** 2)) - 2.0 * np.exp(-((lat / 12.0) ** 2))
    return np.deg2rad(deg_per_6h) / 6.0


def smooth_noise(grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """Large-scale random field of about unit variance (global wavenumbers ≲ 5, ~12° in latitude)."""
    white = rng.standard_normal(grid.phi.shape[:1] + grid.lam.shape[1:])
    spec = np.fft.rfft(white, axis=1) * np.exp(-((grid.k / 5.0) ** 2))
    field = grid.lat_smooth @ np.fft.irfft(spec, n=white.shape[1], axis=1)
    return field / grid.noise_scale


def advect(field: np.ndarray, omega: np.ndarray, hours: float, grid: Grid, nu: float) -> np.ndarray:
    """Shift each latitude row east by omega·hours (exact, spectral), damp high wavenumbers,
    and mix neighbouring latitudes."""
    spec = np.fft.rfft(field, axis=1)
    spec *= np.exp(-1j * grid.k * omega[:, None] * hours - nu * grid.k**2 * hours)
    out = np.fft.irfft(spec, n=field.shape[1], axis=1)
    padded = np.concatenate([out[:1], out, out[-1:]])
    return out + grid.mixing * hours * (padded[2:] - 2 * out + padded[:-2])


class State:
    """The latent fields and their evolution."""

    def __init__(self, grid: Grid, rng: np.random.Generator, noise: float) -> None:
        self.grid, self.rng, self.noise = grid, rng, noise
        shape = (len(grid.lat), len(grid.lon))
        self.a, self.b, self.t, self.m = (np.zeros(shape) for _ in range(4))
        self.omega = angular_speed(grid.lat)

    def advance(self, hours: float) -> None:
        g, w, h = self.grid, self.omega, hours
        kick = self.noise * np.sqrt(2.0 * h / DAMPING_HOURS)
        a = advect(self.a, w, h, g, 1e-5)
        b = advect(self.b, 0.5 * w, h, g, 1e-5)
        t = advect(self.t, 0.6 * w, h, g, 2e-5)
        m = advect(self.m, 0.5 * w, h, g, 2e-5)
        self.a = a * (1 - h / DAMPING_HOURS) + kick * smooth_noise(g, self.rng)
        self.b = b + (a - b) * h / 24.0
        self.t = t + (0.8 * b - t) * h / 48.0 + 0.5 * kick * smooth_noise(g, self.rng)
        self.m = m + (0.9 * t - m) * h / 72.0 + 0.5 * kick * smooth_noise(g, self.rng)


def _per_level(levels: np.ndarray, table: tuple[float, float, float, float]) -> np.ndarray:
    return np.interp(np.log(levels.astype(float)), LEVEL_TABLE, table)[:, None, None]


def fields(state: State, time: pd.Timestamp, levels: np.ndarray, orography: np.ndarray) -> dict[str, np.ndarray]:
    """The stored variables at one time: name → (lat, lon) or (level, lat, lon) array."""
    g = state.grid
    s, c = np.sin(g.phi), np.cos(g.phi)
    season = np.cos(2 * np.pi * (time.day_of_year - 172) / 365.25)
    local_hour = (time.hour + np.rad2deg(g.lam) / 15.0) % 24
    diurnal = np.cos(2 * np.pi * (local_hour - 15.0) / 24.0) * (1.0 + 5.0 * c)
    weight = _per_level(levels, (1.0, 0.8, 0.45, 0.25))
    anom = weight * state.a + (1 - weight) * state.b                       # (level, lat, lon)
    msl = 101325.0 - 600.0 * s**2 + 1000.0 * (0.25 * state.a + 0.75 * state.b)
    z = (_per_level(levels, (201000.0, 56700.0, 14600.0, 1100.0))
         - _per_level(levels, (4000.0, 6500.0, 1200.0, 300.0)) * s**2
         + _per_level(levels, (300.0, 800.0, 300.0, 0.0)) * s * season
         + _per_level(levels, (3000.0, 1600.0, 900.0, 0.0)) * anom)
    z1000 = 0.785 * (msl - 100000.0)
    z = np.where(levels[:, None, None] >= 1000, z1000, z)
    jet = _per_level(levels, (0.3, 0.6, 0.35, 0.25)) * state.omega[:, None] * EARTH_RADIUS * c / 3600.0
    gain = _per_level(levels, (3.0, 2.5, 1.8, 1.5))  # m/s per unit anomaly and radian
    u = jet - gain * np.gradient(anom, np.deg2rad(g.lat[1] - g.lat[0]), axis=1)
    v = gain * np.gradient(anom, np.deg2rad(g.lon[1] - g.lon[0]), axis=2) / np.maximum(c, 0.5)
    t = (_per_level(levels, (212.0, 262.0, 290.0, 297.0))
         + _per_level(levels, (12.0, -25.0, -35.0, -40.0)) * s**2
         + _per_level(levels, (2.0, 5.0, 8.0, 10.0)) * s * season
         + _per_level(levels, (2.0, 3.0, 4.0, 4.0)) * state.t)
    rh = 100.0 / (1.0 + np.exp(-(_per_level(levels, (-3.0, -0.4, 0.6, 1.0)) + 1.3 * state.m)))
    t2m = 297.0 - 40.0 * s**2 + 10.0 * s * season - 0.0065 * orography + 4.0 * state.t + 1.5 * diurnal
    return {
        "2m_temperature": t2m,
        "10m_u_component_of_wind": 0.6 * u[-1],
        "10m_v_component_of_wind": 0.6 * v[-1],
        "mean_sea_level_pressure": msl,
        "surface_pressure": msl * np.exp(-orography / 8400.0),
        "total_column_water_vapour": 2.0 + 45.0 * c**4 * np.exp(0.35 * state.m) * (1 + 0.15 * s * season),
        "geopotential": z, "temperature": t, "u_component_of_wind": u, "v_component_of_wind": v,
        "relative_humidity": rh,
        "specific_humidity": specific_humidity(rh, t, levels.astype(float)[:, None, None]),
    }


UNITS = {"2m_temperature": "K", "10m_u_component_of_wind": "m s**-1",
         "10m_v_component_of_wind": "m s**-1", "mean_sea_level_pressure": "Pa",
         "surface_pressure": "Pa", "total_column_water_vapour": "kg m**-2",
         "geopotential": "m**2 s**-2", "temperature": "K", "u_component_of_wind": "m s**-1",
         "v_component_of_wind": "m s**-1", "relative_humidity": "%", "specific_humidity": "kg kg**-1"}


def _orography(grid: Grid, rng: np.random.Generator) -> np.ndarray:
    out = np.zeros((len(grid.lat), len(grid.lon)))
    for _ in range(4):
        lat0, lon0 = rng.uniform(-60, 60), rng.uniform(0, 360)
        dlon = (grid.lon[None, :] - lon0 + 180) % 360 - 180
        out += rng.uniform(800, 3000) * np.exp(-((grid.lat[:, None] - lat0) / 10) ** 2 - (dlon / 15) ** 2)
    return out


def simulate(cfg: GenConfig):
    """Yield (time, variables) for every stored time, after a 30-day spin-up."""
    grid, rng = Grid(cfg.n_lat, cfg.n_lon), np.random.default_rng(cfg.seed)
    state, levels = State(grid, rng, cfg.noise), np.asarray(cfg.levels)
    orography = _orography(grid, rng)
    sub = SUBSTEP_HOURS if cfg.step_hours % SUBSTEP_HOURS == 0 else 1
    for _ in range(SPIN_UP_HOURS // sub):
        state.advance(sub)
    for time in cfg.times():
        yield time, fields(state, time, levels, orography)
        for _ in range(cfg.step_hours // sub):
            state.advance(sub)


def write_store(cfg: GenConfig, path: Path, chunk: int = 16) -> None:
    """Write the store year by year (zarr v2 + consolidated metadata, as WeatherBench2 does)."""
    grid = Grid(cfg.n_lat, cfg.n_lon)
    coords = {"latitude": ("latitude", grid.lat, {"units": "degrees_north"}),
              "longitude": ("longitude", grid.lon, {"units": "degrees_east"}),
              "level": ("level", np.asarray(cfg.levels, dtype=np.int64), {"units": "hPa"})}
    buffer: dict[str, list[np.ndarray]] = {}
    times: list[pd.Timestamp] = []
    first = True
    for time, values in simulate(cfg):
        times.append(time)
        for name, arr in values.items():
            buffer.setdefault(name, []).append(arr.astype(np.float32))
        if len(times) == cfg.days_per_month * 12 * 24 // cfg.step_hours:  # one year
            ds = _dataset(buffer, times, coords, cfg)
            encoding = {n: {"chunks": (chunk, *ds[n].shape[1:])} for n in ds.data_vars} if first else None
            ds.to_zarr(path, mode="w" if first else "a", append_dim=None if first else "time",
                       zarr_format=2, consolidated=True, encoding=encoding)
            buffer, times, first = {}, [], False


def _dataset(buffer, times, coords, cfg: GenConfig) -> xr.Dataset:
    data = {}
    for name, arrays in buffer.items():
        dims = ("time", "level", "latitude", "longitude") if arrays[0].ndim == 3 else ("time", "latitude", "longitude")
        data[name] = (dims, np.stack(arrays), {"units": UNITS[name]})
    ds = xr.Dataset(data, coords={**coords, "time": ("time", pd.DatetimeIndex(times).values)})
    ds.attrs = {"title": "joulebench generated ERA5 stand-in (not real data)",
                "generator": json.dumps(asdict(cfg))}
    return ds
