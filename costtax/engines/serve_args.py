"""`--serve-arg=ARG`: arguments passed to vLLM's OpenAI server that `--serve` starts.

Each ARG is one token, `--name=value` or a bare `--flag` (write the `=` form on the costtax
command line too: `--serve-arg=--tensor-parallel-size=2`). vLLM's parser treats `_` and `-`
alike and expands unique prefixes, so names are compared after that normalisation.

Of the arguments costtax sets itself, these may be overridden (the user's value replaces
costtax's, recorded in run.json's server record and in server.log's command line):

* `--dtype`, `--block-size`, `--enforce-eager` / `--no-enforce-eager` (costtax's CPU settings;
  on a GPU costtax sets none of them), `--disable-uvicorn-access-log`.

These are refused (the run stops with exit 2 before any server starts), because costtax
reads or owns what they control:

* `--model`, `--served-model-name`: the model is `--model`; the client addresses it by name;
* `--host`, `--port`, `--uds`, `--root-path`, `--api-key`, `--ssl-*`: costtax's client connects
  to the loopback port it picked, without credentials;
* `--seed`, `--max-model-len`: use costtax's own `--seed` / `--max-model-len` (recorded in
  every row);
* `--enable-prefix-caching` / `--no-enable-prefix-caching`: use `--no-prefix-caching`;
* `--enable-prompt-tokens-details`, `--enable-per-request-metrics`, `--generation-config`,
  `--override-generation-config`: costtax reads cached tokens and queue time from the server's
  answers and sends every sampling parameter itself.

Everything else passes through unchanged (`--tensor-parallel-size`, `--pipeline-parallel-size`,
`--distributed-executor-backend=ray`, `--gpu-memory-utilization`, `--max-num-seqs`,
`--kv-cache-dtype`, `--quantization`, ...); vLLM itself rejects what it does not know (the
server fails to start and costtax names server.log).
"""
from __future__ import annotations

from typing import Sequence

from ..errors import ConfigError

FIELD = "--serve-arg"

# name -> how many following values costtax's own command gives it (0 for a flag)
OVERRIDABLE: dict[str, int] = {"dtype": 1, "block-size": 1, "enforce-eager": 0, "no-enforce-eager": 0, "disable-uvicorn-access-log": 0}
_SAME_SETTING = {"enforce-eager": ("enforce-eager", "no-enforce-eager"), "no-enforce-eager": ("enforce-eager", "no-enforce-eager")}

REFUSED: dict[str, str] = {
    "model": "the model is costtax's --model",
    "served-model-name": "costtax's client addresses the model by the name it starts it with",
    "host": "costtax serves on the loopback address its client connects to",
    "port": "costtax picks a free port and connects there",
    "uds": "costtax's client connects over TCP to the port it picked",
    "root-path": "costtax's client expects the API at /v1 on its port",
    "api-key": "costtax's client sends no credentials to the server it starts",
    "seed": "use costtax's --seed",
    "max-model-len": "use costtax's --max-model-len",
    "enable-prefix-caching": "use costtax's --no-prefix-caching to turn it off",
    "no-enable-prefix-caching": "use costtax's --no-prefix-caching",
    "enable-prompt-tokens-details": "costtax sets it: cached prompt tokens are read from usage",
    "enable-per-request-metrics": "costtax sets it: queue time per request is read from it",
    "generation-config": "costtax sends every sampling parameter itself (it sets --generation-config vllm)",
    "override-generation-config": "costtax sends every sampling parameter itself",
}
_REFUSED_PREFIXES = ("ssl-",)


def _name(arg: str) -> str:
    return arg[2:].split("=", 1)[0].replace("_", "-").split(".", 1)[0]


def _refusal(name: str) -> tuple[str, str] | None:
    """(costtax's argument, why) when `name` is refused, also for a prefix argparse would
    expand to a refused argument."""
    if name in REFUSED:
        return name, REFUSED[name]
    if name.startswith(_REFUSED_PREFIXES):
        return name, "costtax's client connects over plain HTTP on loopback"
    if len(name) >= 2 and not any(o.startswith(name) for o in OVERRIDABLE):
        for full, why in REFUSED.items():
            if full.startswith(name):
                return full, why
    return None


def validate_serve_args(args: Sequence[str], *, serve: bool) -> tuple[str, ...]:
    """Check each ARG (config-time, no I/O); returns them as a tuple. Raises ConfigError
    naming --serve-arg for a malformed or refused argument."""
    args = tuple(args or ())
    if args and not serve:
        raise ConfigError(FIELD, args[0], "--serve-arg passes arguments to the server --serve starts; add --serve")
    for arg in args:
        if not isinstance(arg, str) or not arg.startswith("-") or arg.strip() != arg or not arg.strip("-"):
            raise ConfigError(
                FIELD, arg, "give one server argument per --serve-arg, as --name=value or --flag, e.g. --serve-arg=--tensor-parallel-size=2"
            )
        if arg.startswith("--"):
            refused = _refusal(_name(arg))
            if refused:
                full, why = refused
                raise ConfigError(FIELD, arg, f"costtax sets --{full} itself and it cannot be overridden: {why}")
    return args


def overridden(args: Sequence[str]) -> set[str]:
    """Names of costtax's own arguments the user's args replace."""
    out: set[str] = set()
    for arg in args:
        if arg.startswith("--"):
            name = _name(arg)
            if name in OVERRIDABLE:
                out.update(_SAME_SETTING.get(name, (name,)))
    return out


def merge(base: Sequence[str], user: Sequence[str]) -> list[str]:
    """costtax's command `base` with the user's args appended, dropping costtax's own value of
    every argument the user overrides (so the command line says one value, not two)."""
    drop = overridden(user)
    out: list[str] = []
    i = 0
    base = list(base)
    while i < len(base):
        tok = base[i]
        name = _name(tok) if tok.startswith("--") else None
        if name in drop and "=" not in tok:
            i += 1 + OVERRIDABLE.get(name, 0)
            continue
        if name in drop:
            i += 1
            continue
        out.append(tok)
        i += 1
    return out + list(user)
