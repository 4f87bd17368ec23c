"""joulebench harness: registry, run specs, runner, meters and the result store."""

__version__ = "0.1.0"
SCHEMA_VERSION = 2
