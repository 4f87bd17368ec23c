"""ERA5 global weather forecasting with a FourCastNet-style AFNO (WeatherBench2 layout)."""

from joulebench.tasks.era5.task import ERA5

__all__ = ["ERA5"]
