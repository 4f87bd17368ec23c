"""Declared parameters of tasks and methods.

Parameters are declared beside the class that uses them (as benchopt does for solvers), so the
registry can list them, the run spec can validate them and a search method can read their ranges
without running anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ParamValue = bool | int | float | str | None


class SpecError(ValueError):
    """A run spec, campaign or parameter that cannot be run; the message is one line for the user."""


@dataclass(frozen=True)
class Param:
    """One declared parameter: its default and, for search methods, its range.

    ``low``/``high`` bound numeric values (``log`` says the range is searched on a log scale);
    ``choices`` lists the allowed values of a categorical parameter. ``applies`` says when the
    parameter means anything, as other parameters of the same owner and their values, e.g.
    ``Param(16, applies={"model": ("patchtst",)})``: where it does not apply, the resolved spec
    drops it (so it is neither in the run_key nor in the row), and setting it is an error.
    """

    default: ParamValue
    low: float | None = None
    high: float | None = None
    choices: Sequence[ParamValue] | None = None
    log: bool = False
    help: str = ""
    applies: Mapping[str, Sequence[ParamValue]] | None = None

    def applies_to(self, values: Mapping[str, Any]) -> bool:
        """True when every condition of ``applies`` holds for the resolved ``values``."""
        return all(values.get(name) in allowed for name, allowed in (self.applies or {}).items())

    def condition(self) -> str:
        return " and ".join(f"{name} in {list(allowed)}" for name, allowed in (self.applies or {}).items())

    @property
    def kind(self) -> str:
        if self.choices is not None:
            return "choice"
        if isinstance(self.default, bool):
            return "bool"
        if isinstance(self.default, int) and (self.low is None or float(self.low).is_integer()):
            return "int"
        if isinstance(self.default, (int, float)):
            return "float"
        return "str"

    @property
    def searchable(self) -> bool:
        return self.choices is not None or (self.low is not None and self.high is not None)

    def coerce(self, name: str, value: Any) -> ParamValue:
        """Convert a value (possibly a string from the command line) to the declared type."""
        kind = self.kind
        try:
            if value is None:
                return None
            if kind == "bool":
                if isinstance(value, str):
                    low = value.strip().lower()
                    if low not in {"true", "false", "1", "0", "yes", "no"}:
                        raise ValueError(value)
                    return low in {"true", "1", "yes"}
                return bool(value)
            if kind == "int":
                number = float(value) if isinstance(value, str) else value
                if isinstance(number, float) and not number.is_integer():
                    raise ValueError(value)
                return int(number)
            if kind == "float":
                out = float(value)
                if math.isnan(out):
                    raise ValueError(value)
                return out
            if kind == "choice":
                for choice in self.choices or ():
                    if value == choice or str(value) == str(choice):
                        return choice
                raise SpecError(
                    f"parameter {name!r}: {value!r} is not one of {list(self.choices or ())}"
                )
            return str(value)
        except SpecError:
            raise
        except (TypeError, ValueError):
            raise SpecError(f"parameter {name!r}: {value!r} is not a valid {kind}") from None

    def check_range(self, name: str, value: ParamValue) -> None:
        if value is None or self.kind not in {"int", "float"}:
            return
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            raise SpecError(f"parameter {name!r}: {value} is outside [{self.low}, {self.high}]")

    def describe(self) -> str:
        if self.choices is not None:
            rng = "{" + ", ".join(map(str, self.choices)) + "}"
        elif self.low is not None or self.high is not None:
            rng = f"[{self.low}, {self.high}]" + (" log" if self.log else "")
        else:
            rng = ""
        return f"{self.default!r} {rng}".strip()


def resolve_params(
    owner: str,
    declared: Mapping[str, Param],
    *layers: Mapping[str, Any] | None,
) -> dict[str, ParamValue]:
    """Merge defaults with override layers (later wins), rejecting unknown names and bad values.

    The last layer is what the user set; the earlier ones are defaults (a preset's). Parameters
    that do not apply to the merged values are dropped; one the user set is an error instead.
    """
    out: dict[str, ParamValue] = {name: p.default for name, p in declared.items()}
    for layer in layers:
        for name, value in (layer or {}).items():
            if name not in declared:
                allowed = ", ".join(sorted(declared)) or "none"
                raise SpecError(f"{owner} has no parameter {name!r}; allowed: {allowed}")
            out[name] = declared[name].coerce(name, value)
    explicit = set(layers[-1] or {}) if layers else set()
    for name in [n for n, p in declared.items() if not p.applies_to(out)]:
        if name in explicit:
            shown = ", ".join(f"{k}={out.get(k)!r}" for k in declared[name].applies or {})
            raise SpecError(f"{owner}: parameter {name!r} applies only when {declared[name].condition()}"
                            f" (this run has {shown}); remove it")
        del out[name]
    for name, value in out.items():
        declared[name].check_range(name, value)
    return out


class Hyper(dict):
    """Resolved parameter values, readable as ``hp.lr`` or ``hp["lr"]``.

    It remembers which names were read, so the runner can fail a run that sets a parameter
    nothing reads (a declaration that silently changes nothing would still change the run_key).
    Reading all values at once (``dict(hp)``, ``hp.items()``) counts as reading every one.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        self.read.add(name)
        return super().__getitem__(name)

    def get(self, name: str, default: Any = None) -> Any:
        self.read.add(name)
        return super().get(name, default)

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str):
            self.read.add(name)
        return super().__contains__(name)

    def derive(self, **extra: Any) -> Hyper:
        """A copy with ``extra`` values added; its reads count as reads of this one (a task
        that passes its parameters on to a model builder keeps the record exact)."""
        child = Hyper({**dict(dict.items(self)), **extra})
        child.read = self.read
        return child

    def _read_all(self) -> None:
        self.read.update(super().keys())

    def keys(self):  # noqa: D102 - dict's, marking every value read
        self._read_all()
        return super().keys()

    def items(self):  # noqa: D102
        self._read_all()
        return super().items()

    def values(self):  # noqa: D102
        self._read_all()
        return super().values()

    def __iter__(self):
        self._read_all()
        return super().__iter__()

    def __reduce__(self):
        return (type(self), (dict(super().items()),))


def unread_params(hp: Hyper, declared: Mapping[str, Param]) -> list[str]:
    """Parameters set away from their declared default that nothing read during the run."""
    return sorted(name for name, value in dict.items(hp)
                  if name in declared and name not in hp.read and value != declared[name].default)


def parse_assignments(items: Sequence[str] | None) -> dict[str, str]:
    """Parse ``key=value`` strings from the command line."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"expected key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out
