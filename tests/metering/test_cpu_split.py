"""metering/cpu_split.py: the harness's own CPU and its descendants' CPU, each read from its
own counter, add up to what the process-tree sampler measures for the same window (the check
report/invariants.py makes on every row), and neither is a share of the other."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from costtax.metering import ResourceMeter

pytestmark = pytest.mark.integration

CHILD_BURN_S = 0.8
OWN_BURN_S = 0.4


def _burn(seconds: float) -> None:
    t0 = time.process_time()
    x = 0
    while time.process_time() - t0 < seconds:
        x += 1


def test_harness_and_child_cpu_are_measured_apart():
    # the child burns, says so, then stays alive (asleep) until the window has closed
    code = f"import time\nt0=time.process_time()\nwhile time.process_time()-t0<{CHILD_BURN_S}: pass\nprint('done', flush=True)\ntime.sleep(30)\n"
    child = None
    try:
        with ResourceMeter() as m:
            child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
            _burn(OWN_BURN_S)
            assert child.stdout.readline().strip() == "done"
            time.sleep(0.3)  # past the tree sampler's next walk
    finally:
        if child is not None:
            child.kill()
            child.wait(timeout=30)
    r = m.reading
    assert r.harness_cpu_s is not None and r.engine_cpu_s is not None and r.cpu_s is not None
    # own burn on the harness side (plus the meter's threads, the child's start-up), the child's
    # burn (plus its interpreter start) on the engine side
    assert OWN_BURN_S * 0.95 <= r.harness_cpu_s <= OWN_BURN_S + 0.5, r
    assert CHILD_BURN_S <= r.engine_cpu_s <= CHILD_BURN_S + 0.6, r
    # the same window, three readers: harness + engine within the invariant's tolerance of the tree
    from costtax.report.invariants import cpu_split_check

    got = cpu_split_check([{"meter": r.as_dict()}])
    assert got["flag_cpu_split_disagrees"] is False, (r.harness_cpu_s, r.engine_cpu_s, r.cpu_s)
