"""Smart-grid probabilistic load forecasting (AutoPQ style): point forecaster + cINN quantiles."""

from joulebench.tasks.load.task import LoadForecast

__all__ = ["LoadForecast"]
