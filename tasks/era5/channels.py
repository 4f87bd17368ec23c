"""FourCastNet's input/output channels and where each lives in a WeatherBench2 ERA5 store.

A channel is one 2-D field per time step: a surface variable, or a pressure-level variable at one
level (hPa). Names follow the FourCastNet paper (Pathak et al. 2022, table 1); variables follow the
WeatherBench2 ERA5 zarr stores (``gs://weatherbench2/datasets/era5/...``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Channel:
    name: str
    variable: str
    level: int | None
    units: str


def _surface(name: str, variable: str, units: str) -> Channel:
    return Channel(name, variable, None, units)


def _level(prefix: str, variable: str, level: int, units: str) -> Channel:
    return Channel(f"{prefix}{level}", variable, level, units)


SURFACE = {
    "u10": _surface("u10", "10m_u_component_of_wind", "m s-1"),
    "v10": _surface("v10", "10m_v_component_of_wind", "m s-1"),
    "t2m": _surface("t2m", "2m_temperature", "K"),
    "sp": _surface("sp", "surface_pressure", "Pa"),
    "msl": _surface("msl", "mean_sea_level_pressure", "Pa"),
    "tcwv": _surface("tcwv", "total_column_water_vapour", "kg m-2"),
}
LEVEL_VARIABLES = {  # channel prefix -> (WB2 variable, units)
    "z": ("geopotential", "m2 s-2"),
    "t": ("temperature", "K"),
    "u": ("u_component_of_wind", "m s-1"),
    "v": ("v_component_of_wind", "m s-1"),
    "r": ("relative_humidity", "%"),
    "q": ("specific_humidity", "kg kg-1"),
}

FOURCASTNET = ("u10", "v10", "t2m", "sp", "msl", "t850", "u1000", "v1000", "z1000", "u850",
               "v850", "z850", "u500", "v500", "z500", "t500", "z50", "r500", "r850", "tcwv")
"""The 20 channels of FourCastNet, in the paper's order."""

KEY_CHANNELS = ("z500", "t850", "t2m", "u10")
"""Channels reported one by one in physical units (as in FourCastNet's figures)."""


def channel(name: str) -> Channel:
    """The channel called ``name``: a surface name (``t2m``) or a prefix and a level (``z500``)."""
    if name in SURFACE:
        return SURFACE[name]
    prefix, digits = name[:1], name[1:]
    if prefix in LEVEL_VARIABLES and digits.isdigit():
        variable, units = LEVEL_VARIABLES[prefix]
        return _level(prefix, variable, int(digits), units)
    raise ValueError(f"unknown ERA5 channel {name!r}: use one of {', '.join(SURFACE)} or a "
                     f"level channel {'/'.join(LEVEL_VARIABLES)}<hPa> such as z500, t850")


def parse_channels(spec: str) -> tuple[Channel, ...]:
    """``full`` (FourCastNet's 20) or a comma-separated list of channel names."""
    names = FOURCASTNET if spec.strip() in {"full", "fourcastnet"} else \
        tuple(n.strip() for n in spec.split(",") if n.strip())
    if not names:
        raise ValueError("channels is empty: give 'full' or names such as z500,t850,t2m")
    if len(set(names)) != len(names):
        raise ValueError(f"channels {spec!r} names a channel twice")
    return tuple(channel(n) for n in names)
