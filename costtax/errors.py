"""Error types that the CLI turns into one-line messages with exit code 2."""
from __future__ import annotations


class CosttaxError(Exception):
    """Base class for errors costtax reports to the user without a traceback."""


class ConfigError(CosttaxError, ValueError):
    """Bad user input: names the field, the bad value and how to fix it."""

    def __init__(self, field: str, value: object, fix: str):
        self.field = field
        self.value = value
        self.fix = fix
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{field}: bad value {shown}: {fix}")


class EngineUnavailable(CosttaxError, RuntimeError):
    """An engine's library is missing or cannot start here."""
