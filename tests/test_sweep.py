"""experiments/sweep.py for real: a tiny local sweep of both scripts on cartpole-swingup, killed
part-way with SIGTERM to the launcher and its jobs, relaunched to the end (every run finishes once,
its evaluations.csv continuous), `--status`; bad flags; and the same sweep through a single-node
Slurm (munged, slurmctld and slurmd started here) with a requeue after `scancel --signal=USR1`."""

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from common import ROOT

SWEEP = [sys.executable, os.path.join(ROOT, "experiments", "sweep.py")]
GRID = ["--methods", "sgqn.py", "drq=sac_baseline.py --augmentation shift", "--env-ids", "cartpole-swingup",
        "--seeds", "1", "2", "--runs-dir", "runs/sweep"]
TOTAL, EVERY = 300, 100
RUN_FLAGS = ["--", "--total-timesteps", str(TOTAL), "--learning-starts", "100", "--eval-freq", str(EVERY),
             "--save-freq", str(EVERY), "--eval-episodes", "1", "--eval-modes", "train", "--num-conv-layers", "2",
             "--num-filters", "8", "--projection-dim", "16", "--hidden-dim", "32", "--image-size", "32",
             "--batch-size", "16", "--console-freq", "100"]
RUNS = [f"cartpole-swingup__{method}__{seed}" for method in ("sgqn", "drq") for seed in (1, 2)]
ENV = dict(os.environ, OMP_NUM_THREADS="1", MUJOCO_GL="egl")


def sweep(cwd, *args, env=ENV, timeout=300):
    return subprocess.run(SWEEP + list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def wait_for(condition, timeout, what):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def summary(run_dir):
    path = os.path.join(run_dir, "summary.json")
    return json.load(open(path)) if os.path.exists(path) else None


def assert_finished_once(runs_dir, runs=RUNS):
    """Each run finished at TOTAL, with exactly one evaluation row per evaluated step."""
    for run in runs:
        run_dir = os.path.join(runs_dir, run)
        assert summary(run_dir)["status"] == "finished" and summary(run_dir)["step"] == TOTAL, run
        with open(os.path.join(run_dir, "evaluations.csv"), newline="") as f:
            rows = list(csv.DictReader(f))
        assert [(int(r["step"]), r["mode"], r["episode"]) for r in rows] == \
            [(step, "train", "0") for step in range(EVERY, TOTAL + 1, EVERY)], run


def status_lines(cwd, env=ENV):
    out = sweep(cwd, *GRID, "--status", *RUN_FLAGS, env=env)
    assert out.returncode == 0, out.stderr
    return {line.split()[0]: line.split()[1] for line in out.stdout.splitlines() if line.startswith("  ")}


def test_killed_sweep_relaunches_and_finishes_every_run_once(tmp_path):
    runs_dir = tmp_path / "runs" / "sweep"
    launcher = subprocess.Popen(SWEEP + GRID + ["--cluster", "local", "--parallel", "2"] + RUN_FLAGS, cwd=tmp_path,
                                env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)  # its own process group: the launcher and its jobs
    try:
        wait_for(lambda: any(os.path.exists(runs_dir / run / "checkpoint.pt") for run in RUNS), 180, "a first checkpoint")
        os.killpg(launcher.pid, signal.SIGTERM)
        out, err = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert launcher.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err, err
    with pytest.raises(ProcessLookupError):  # no job outlives the launcher
        os.killpg(launcher.pid, 0)
    stopped = [run for run in RUNS if summary(runs_dir / run)]
    assert stopped and all(summary(runs_dir / run)["status"] == "interrupted" for run in stopped), out
    assert all(os.path.exists(runs_dir / run / "checkpoint.pt") for run in stopped)
    states = status_lines(tmp_path)
    assert {states[run] for run in stopped} == {"stopped"} and len(states) == len(RUNS), states
    assert {states[run] for run in RUNS if run not in stopped} <= {"not started"}, states

    relaunch = sweep(tmp_path, *GRID, "--cluster", "local", "--parallel", "2", *RUN_FLAGS)
    assert relaunch.returncode == 0, relaunch.stdout + relaunch.stderr
    for run in stopped:
        step = summary(runs_dir / run)["step"]
        assert f"resume  {run}" in relaunch.stdout
        logs = [open(runs_dir / "jobs" / name).read() for name in os.listdir(runs_dir / "jobs") if name.endswith(".out")]
        assert any(f"resumed {run} at step" in log for log in logs), run
        del step
    assert_finished_once(runs_dir)
    assert set(status_lines(tmp_path).values()) == {"done"}

    mtimes = {run: os.path.getmtime(runs_dir / run / "checkpoint.pt") for run in RUNS}
    again = sweep(tmp_path, *GRID, "--cluster", "local", *RUN_FLAGS)
    assert again.returncode == 0 and "0 to run" in again.stdout, again.stdout + again.stderr
    assert mtimes == {run: os.path.getmtime(runs_dir / run / "checkpoint.pt") for run in RUNS}


@pytest.mark.parametrize("flags, message", [
    (["--", "--total-timestep", "5"], "unrecognized --total-timestep 5 (did you mean --total-timesteps?)"),
    (["--methods", "sac_baseline.py --augmentation flip"], "invalid choice 'flip' for argument '--augmentation'"),
    (["--", "--seed", "3"], "--seed in"),
    (["--methods", "nothing.py"], "script 'nothing.py' in --methods 'nothing.py' not found"),
    (["--env-ids", "walker-wlk"], "walker-wlk"),
    (["--", "--eval-freq", "0"], "--eval-freq 0: must be at least 1"),
])
def test_bad_input_is_one_line_before_anything_launches(tmp_path, flags, message):
    out = sweep(tmp_path, "--methods", "sgqn.py", "--env-ids", "cartpole-swingup", "--seeds", "1", *flags, timeout=120)
    assert out.returncode == 1 and out.stdout == "", out.stdout + out.stderr
    assert out.stderr.startswith("error: ") and out.stderr.count("\n") == 1 and message in out.stderr, out.stderr
    assert os.listdir(tmp_path) == []
