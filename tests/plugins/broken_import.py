"""A plugin that fails to import."""

import joulebench_no_such_module  # noqa: F401
