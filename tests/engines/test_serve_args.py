"""--serve-arg: what reaches the server's command line, what is refused (engines/serve_args.py)."""
from __future__ import annotations

import json
import sys

import pytest

from costtax.engines.serve_args import OVERRIDABLE, REFUSED, merge, validate_serve_args
from costtax.errors import ConfigError

pytestmark = pytest.mark.unit

sys.path.insert(0, __import__("os").path.dirname(__file__))
from test_server_lifetime import Owner, owners, stand_in  # noqa: E402,F401  (fixtures)


def test_serve_args_reach_the_stand_in_servers_argv_and_the_record(tmp_path, stand_in, owners):
    args = ["--tensor-parallel-size=2", "--distributed-executor-backend=ray", "--dtype=bfloat16", "--no-enforce-eager", "--max-num-seqs=8"]
    o = Owner(tmp_path / "run", stand_in, serve_args=args)
    owners.append(o)
    argv = json.loads((tmp_path / "run" / "argv-s1.json").read_text())  # what the server process received
    assert argv[-len(args):] == args
    # overridden: costtax's own dtype and eager flag are gone, not doubled
    assert "--enforce-eager" not in argv and "float32" not in argv and argv.count("--dtype") == 0
    assert argv[argv.index("--block-size") + 1] == "32"  # not overridden: costtax's value stays
    rec = o.record()
    assert rec["serve_args"] == args and rec["command"][-len(args):] == args
    log = (tmp_path / "run" / "server.log").read_text()
    assert "--tensor-parallel-size=2" in log.splitlines()[0] and log.startswith("# costtax --serve:")


def test_merge_drops_only_what_is_overridden():
    base = ["py", "-m", "x", "--model", "/m", "--dtype", "float32", "--enforce-eager", "--block-size", "32", "--seed", "0"]
    assert merge(base, ["--block-size=16"]) == ["py", "-m", "x", "--model", "/m", "--dtype", "float32", "--enforce-eager", "--seed", "0", "--block-size=16"]
    assert merge(base, ["--enforce-eager"])[-1] == "--enforce-eager" and merge(base, ["--enforce-eager"]).count("--enforce-eager") == 1
    assert merge(base, ["--tensor_parallel_size=2"]) == base + ["--tensor_parallel_size=2"]
    assert merge(base, ["--block_size=64"]).count("32") == 0  # vLLM reads _ as -


@pytest.mark.parametrize("arg", ["--" + n for n in REFUSED] + ["--port=1", "--served_model_name=x", "--ssl-keyfile=k", "--seed=3", "--hos=0.0.0.0"])
def test_costtax_owned_arguments_are_refused(arg):
    with pytest.raises(ConfigError) as ei:
        validate_serve_args([arg], serve=True)
    msg = str(ei.value)
    assert msg.startswith("--serve-arg:") and "cannot be overridden" in msg and "\n" not in msg


@pytest.mark.parametrize("arg", ["--" + n for n in OVERRIDABLE] + ["--tensor-parallel-size=2", "-tp=2", "--pipeline-parallel-size=2", "--kv-cache-dtype=fp8", "--block=16"])
def test_other_arguments_pass(arg):
    assert validate_serve_args([arg], serve=True) == (arg,)


@pytest.mark.parametrize("arg", ["2", "", " --dtype=half", "--", "tensor-parallel-size=2"])
def test_malformed_serve_args(arg):
    with pytest.raises(ConfigError, match="--name=value"):
        validate_serve_args([arg], serve=True)


def test_serve_args_need_serve_and_are_recorded_in_the_config():
    from costtax.config import RunConfig

    with pytest.raises(ConfigError, match="add --serve"):
        RunConfig(serve_args=("--tensor-parallel-size=2",))
    c = RunConfig(serve=True, serve_args=["--tensor-parallel-size=2"])
    assert c.serve_args == ("--tensor-parallel-size=2",) and c.to_dict()["serve_args"] == ["--tensor-parallel-size=2"]
