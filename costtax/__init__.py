"""costtax: profile what inference-time alignment costs and what it buys."""
from __future__ import annotations

from .config import RunConfig
from .profile import RunResult, profile

__all__ = ["RunConfig", "RunResult", "profile"]
__version__ = "0.1.0"
