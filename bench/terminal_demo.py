"""`costtax profile`'s terminal output with the test suite's fake engine and reward model
(tests/fakes.py: no vLLM, no model), for looking at the live display without a heavy run:

    bench/terminal_capture.sh 80 OUT.txt bench/terminal_demo.py /tmp/demo-run

Same path as the CLI: EngineLog (fds 1/2 to RUN_DIR/engine.log), RunDisplay on the terminal,
profile() with its phase events, then the tax table fitted to the terminal. The engine answers
after a fixed 0.3 s per call; the default cells (plain, bon:n=4, cai:rounds=1) on 4 prompts.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes import FakeReward, TimedEngine  # noqa: E402

from costtax.cli import _print_table  # noqa: E402
from costtax.config import DEFAULT_TECHNIQUES, RunConfig  # noqa: E402
from costtax.console.display import EngineLog, RunDisplay  # noqa: E402
from costtax.run.profile import profile  # noqa: E402


def main(out: str) -> None:
    cfg = RunConfig(techniques=tuple(DEFAULT_TECHNIQUES), prompts=("helpful",), limit=4, max_tokens=16, out=out,
                    judge_calibration=False)
    scorer = FakeReward()
    with EngineLog() as log:
        display = RunDisplay(log.terminal_err, log=log)
        try:
            result = profile(cfg, engine=TimedEngine(base_s=0.3), scorer=scorer, eval_scorer=scorer, on_event=display)
        finally:
            display.close()
    _print_table(result.run_dir)


if __name__ == "__main__":
    main(sys.argv[1])
