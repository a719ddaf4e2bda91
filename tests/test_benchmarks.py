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


def test_encoder_floor_counts_the_flops_of_the_paper_stack():
    out = subprocess.run([sys.executable, "benchmarks/encoder_floor.py", "--batch-size", "2", "--repeats", "1"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    # 11 convs x 32 filters at 84x84: 41^2 x 32 x 9 x 9 + sum over 39, 37, ..., 21 of h^2 x 32 x 9 x 32 multiply-adds.
    macs = 41 ** 2 * 32 * 81 + sum(h * h for h in range(21, 40, 2)) * 32 * 288
    assert f"{2 * macs * 2 / 1e9:.1f} GFLOP per forward pass" in out
    floors = [float(x) for x in re.findall(r"floor of our SAC step .*?(\d+) ms", out)]
    originals = [float(x) for x in re.findall(r"floor of the original's SAC step .*?(\d+) ms", out)]
    assert len(floors) == len(originals) == 2 and all(o >= f > 0 for f, o in zip(floors, originals))


def test_overlay_speed_times_each_source_and_phase():
    out = subprocess.run([sys.executable, "benchmarks/overlay_speed.py", "--files", "40", "--batches", "2",
                          "--batch-size", "8", "--image-size", "16"], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    rows = {m[0].strip(): float(m[1]) for m in re.findall(r"^(\S.*?)\s+(\d+\.\d)\s+\d+\.\d+%$", out, re.M)}
    assert set(rows) == {"procedural (500), first pass", "procedural, steady state (crops, flips)",
                         "folder (40 files, pool 40), first pass", "folder, steady state (0 reads/batch)"}, out
    assert all(ms > 0 for ms in rows.values())
    assert re.findall(r"pool: (\d+) MB", out) == ["1", "0"]  # 500 and 40 images of 24 x 24 x 3 bytes


def test_learning_benchmark_trains_the_preset_prints_its_table_and_resumes(tmp_path):
    """benchmarks/learning.py on the real cartpole, too short to update (100 agent steps): the
    run uses the preset, its table is read back from evaluations.csv, and a larger --frames
    extends the same run instead of starting again."""
    def run(frames):
        env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "OMP_NUM_THREADS": "1"}
        return subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks/learning.py"), "--env-id", "cartpole-balance",
                               "--frames", str(frames), "--eval-every", "400", "--eval-episodes", "1"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout

    out = run(800)
    assert "networks: 4 convs x 16 filters, projection 50, hidden 1024" in out
    rows = re.findall(r"^\s+(\d+)\s+(\d+\.\d) \+-\s+0\.0$", out, re.M)
    assert [int(frames) for frames, _ in rows] == [400, 800]
    assert re.search(rf"^learned: (yes|no) \(train return {rows[-1][1]} at 800 frames; threshold 500\)$", out, re.M)
    out = run(1200)
    assert "resumed at step 100" in out
    assert [int(f) for f, _ in re.findall(r"^\s+(\d+)\s+(\d+\.\d) \+-\s+0\.0$", out, re.M)] == [400, 800, 1200]
