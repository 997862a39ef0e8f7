"""Seeded byte flips and truncations of small exported custom-op models (float32 and int8,
ragged tails), each loaded and run in a worker process with a timeout: no corrupt model may kill
or hang the process; a Python exception is the right answer. benchmarks/fuzz_runtime.py runs the
same harness for the full campaign (16,000 trials)."""
import importlib.util
import os
import sys

import pytest

TRIALS = int(os.environ.get("TFS_RUNTIME_FUZZ_TRIALS", "400"))
_HARNESS = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "fuzz_runtime.py")


@pytest.fixture(scope="module")
def fuzz():
    spec = importlib.util.spec_from_file_location("fuzz_runtime", _HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_runtime"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_corrupt_models_never_kill_or_hang_the_process(fuzz):
    seeds = fuzz.exported_seeds()
    assert [s.name for s in seeds] == ["float32", "int8", "int8-io", "conv-int8"]
    assert all(len(s.targets) >= 2 for s in seeds)  # structure spans + parameter blobs
    tally = fuzz.campaign(seeds, TRIALS, seed=1, timeout=30.0)
    assert tally.trials == TRIALS
    assert tally.crashes == [] and tally.hangs == [] and tally.over_cap == []
    # The flips reach both the verifier and the runtime behind it: all three outcomes occur.
    assert tally.ran > 0 and tally.clean["InvalidModelError"] > 0 and tally.clean["LiteRtError"] > 0
    assert set(tally.clean) <= {"InvalidModelError", "LiteRtError"}, tally.clean
