"""Constitution files (YAML or JSON): a list of principles, each a critique and a revision
instruction. Loaded and validated before any model loads."""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

DEFAULT_CONSTITUTION = Path(__file__).parents[1] / "data" / "constitution.yaml"
NO_CHANGES = "NO CHANGES NEEDED"


@dataclass(frozen=True)
class Principle:
    id: str
    area: str
    critique: str
    revision: str


@dataclass(frozen=True)
class Constitution:
    name: str
    principles: tuple[Principle, ...]
    source: str


def load_constitution(path: str | None, field: str = "--constitution") -> Constitution:
    p = Path(path).expanduser() if path else DEFAULT_CONSTITUTION
    if not p.is_file():
        raise ConfigError(field, str(path), "no such file; give a YAML or JSON constitution file")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(field, str(p), "not valid UTF-8; save the file as UTF-8") from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml.YAMLError / JSONDecodeError
        raise ConfigError(field, str(p), f"cannot parse ({type(exc).__name__}); check the YAML/JSON syntax") from None
    if isinstance(data, list):
        data = {"principles": data}
    if not isinstance(data, dict) or not isinstance(data.get("principles"), list) or not data["principles"]:
        raise ConfigError(field, str(p), "needs a non-empty 'principles' list of {id, critique, revision}")
    principles = []
    seen = set()
    for i, row in enumerate(data["principles"]):
        if not isinstance(row, dict):
            raise ConfigError(field, str(p), f"principle {i} is not a mapping with id, critique, revision")
        for key in ("critique", "revision"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise ConfigError(field, str(p), f"principle {i} needs a non-empty string '{key}'")
        pid = str(row.get("id", f"p{i}"))
        if pid in seen:
            raise ConfigError(field, str(p), f"duplicate principle id {pid!r}")
        seen.add(pid)
        principles.append(Principle(pid, str(row.get("area", "")), row["critique"].strip(), row["revision"].strip()))
    return Constitution(str(data.get("name", p.stem)), tuple(principles), str(p))


@functools.lru_cache(maxsize=1)
def default_constitution() -> Constitution:
    """The shipped constitution, parsed once per process."""
    return load_constitution(None)
