"""Long-term time-series forecasting (ETT, Electricity, Traffic, Weather, Exchange, ILI)."""

from joulebench.tasks.ltsf.task import LTSF

__all__ = ["LTSF"]
