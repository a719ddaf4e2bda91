"""The update benchmark runs from a clean checkout and prints what the README quotes."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("algorithm, phases", [("sac", {"critic", "actor", "target"}),
                                               ("sgqn", {"critic", "actor", "target", "aux", "attribution"})])
def test_update_speed_prints_phases_and_a_last_line(algorithm, phases):
    out = subprocess.run([sys.executable, "benchmarks/update_speed.py", "--algorithm", algorithm, "--batch-size", "4",
                          "--warmup", "1", "--steps", "2"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert re.fullmatch(rf"{algorithm} update ms/step: \d+\.\d", lines[-1])
    table = {line.split()[0]: line.split()[1:] for line in lines if line.split() and line.split()[0] in phases}
    assert set(table) == phases
    assert all(float(odd) >= 0 and float(even) > 0 for name, (odd, even, *_) in table.items() if name != "actor")
    assert float(table["actor"][0]) == 0.0 and float(table["actor"][1]) > 0  # the actor runs on even steps only
    assert "--channels-last" in out and "freed memory kept" in out  # the scripts' defaults
