"""Reward specs that name a server (``served``, ``openai:URL[,...]``): parsing and checks,
with no heavy import (config.py and rewards/base.py use them). The models are in served.py."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

SERVED = "served"
_OPENAI = "openai:"
_KEYS = ("model", "tokenizer", "kind")


@dataclass(frozen=True)
class ServerRewardSpec:
    """A reward model behind a server: ``via`` "served" (the policy's server) or "openai" (URL)."""

    via: str
    kind: str = "judge"  # judge | scalar
    url: str | None = None
    model: str | None = None
    tokenizer: str | None = None

    def __post_init__(self):
        if self.via not in ("served", "openai"):
            raise ValueError(f"ServerRewardSpec.via: served or openai, got {self.via!r}")
        if self.kind not in ("judge", "scalar"):
            raise ValueError(f"ServerRewardSpec.kind: judge or scalar, got {self.kind!r}")
        if self.via == "openai" and not self.url:
            raise ValueError("ServerRewardSpec.url: required for openai:")

    @property
    def name(self) -> str:
        if self.via == "served":
            return "served:judge"
        return f"openai:{self.url}" + (f",model={self.model}" if self.model else "") + (",kind=scalar" if self.kind == "scalar" else "")

    @property
    def target(self) -> str:
        return self.url or SERVED


def is_server_spec(spec: object) -> bool:
    return isinstance(spec, str) and (spec.strip() == SERVED or spec.strip().startswith(_OPENAI))


def parse_server_spec(spec: str, field: str = "--reward-model") -> ServerRewardSpec:
    """Parse ``served`` or ``openai:URL[,key=value...]`` (no I/O)."""
    spec = spec.strip()
    if spec == SERVED:
        return ServerRewardSpec("served")
    rest = spec[len(_OPENAI):]
    help_ = "write openai:http://HOST:PORT/v1[,model=NAME][,tokenizer=DIR][,kind=judge|scalar]"
    parts = rest.split(",")
    url, opts = parts[0].strip(), {}
    for part in parts[1:]:
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or key not in _KEYS:
            raise ConfigError(field, spec, f"unknown option {part.strip()!r} (options: {', '.join(_KEYS)}); {help_}")
        if not value:
            raise ConfigError(field, spec, f"{key}= needs a value; {help_}")
        if key in opts:
            raise ConfigError(field, spec, f"{key}= given twice; {help_}")
        opts[key] = value
    from urllib.parse import urlparse

    u = urlparse(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ConfigError(field, spec, f"{url!r} is not an http(s) URL; {help_}")
    try:
        u.port
    except ValueError:
        raise ConfigError(field, spec, f"{url!r} has a bad port; {help_}") from None
    kind = opts.get("kind", "judge")
    if kind not in ("judge", "scalar"):
        raise ConfigError(field, spec, f"kind={kind} is not judge or scalar; {help_}")
    tok = opts.get("tokenizer")
    if tok is not None and not (Path(tok).expanduser() / "tokenizer_config.json").is_file() and not (Path(tok).expanduser() / "tokenizer.json").is_file():
        raise ConfigError(field, spec, f"tokenizer={tok} is not a tokenizer directory (no tokenizer.json / tokenizer_config.json)")
    return ServerRewardSpec("openai", kind, url.rstrip("/"), opts.get("model"), tok)


def check_reachable(url: str, field: str, spec: str, timeout_s: float = 5.0) -> None:
    """GET URL/models answers (stdlib only, before any model loads)."""
    import urllib.error
    import urllib.request

    probe = url.rstrip("/") + "/models"
    try:
        with urllib.request.urlopen(probe, timeout=timeout_s):
            return
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code in (401, 403):
            return
        raise ConfigError(field, spec, f"{probe} answered HTTP {exc.code}; give the server's OpenAI API root (…/v1)") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ConfigError(field, spec, f"no reward server answered at {probe} ({getattr(exc, 'reason', exc)}); start it or fix the URL") from None


def check_served_config(spec: str | None, field: str, *, served_policy: bool) -> None:
    """``served`` needs a policy behind a server (config-time, no I/O)."""
    if spec is not None and spec.strip() == SERVED and not served_policy:
        raise ConfigError(
            field, spec, "'served' asks the judge through the policy's own server: add --serve (or --engine openai --base-url URL), "
            "or use judge / openai:URL"
        )
