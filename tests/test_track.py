"""--track (Weights & Biases, as CleanRL has it), for real in offline mode: a run's W&B file holds its
TensorBoard scalars, each once; a resumed run continues the same W&B run (its id kept in the run
folder); without wandb installed, --track is one `error:` line before anything starts, from a script
and from a sweep."""

import glob
import os
import subprocess
import sys

import pytest
from common import ROOT, read_scalars, read_wandb_records

import run_plumbing

FLAGS = [
    "--env-id", "cartpole-swingup", "--action-repeat", "20", "--num-conv-layers", "2", "--num-filters", "8",
    "--projection-dim", "16", "--hidden-dim", "32", "--image-size", "32", "--batch-size", "16",
    "--learning-starts", "20", "--eval-episodes", "1", "--eval-modes", "train", "--eval-freq", "50",
    "--save-freq", "50", "--log-freq", "10",
]  # fmt: skip
ENV = dict(os.environ, MUJOCO_GL="egl", OMP_NUM_THREADS="1", WANDB_MODE="offline")


def run_python(tmp_path, script, *flags, hide_wandb=False):
    """A script (a path under the repository) as a subprocess; with hide_wandb, as where wandb is not installed."""
    path = os.path.join(ROOT, script)
    if not hide_wandb:
        return subprocess.run([sys.executable, path, *flags], cwd=tmp_path, env=ENV, capture_output=True, text=True)
    code = (  # `import wandb` raises ImportError; the script runs as `python script`, its folder on sys.path
        "import os, runpy, sys; sys.modules['wandb'] = None; sys.argv = sys.argv[1:]; "
        "sys.path.insert(0, os.path.dirname(sys.argv[0])); runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    return subprocess.run([sys.executable, "-c", code, path, *flags], cwd=tmp_path, env=ENV, capture_output=True, text=True)


def wandb_run(path):
    """(id, name, project, config, {(tag, step): value}) of an offline W&B run file, with a check that
    no scalar is there twice."""
    records = read_wandb_records(path)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {item.key: item.value_json for item in run.config.update}
    scalars = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            row = {item.key or "/".join(item.nested_key): float(item.value_json) for item in record.history.item}
            for tag, value in row.items():
                if not tag.startswith("_") and tag != "global_step":
                    assert (tag, row["global_step"]) not in scalars, (tag, row["global_step"])
                    scalars[tag, row["global_step"]] = value
    return run.run_id, run.display_name, run.project, config, scalars


def test_track_mirrors_the_tensorboard_scalars_and_a_resumed_run_continues_the_same_wandb_run(tmp_path):
    first = run_python(
        tmp_path, "sac_baseline.py", *FLAGS, "--total-timesteps", "100", "--save-buffer", "--track", "--run-name", "tracked"
    )
    assert first.returncode == 0, first.stderr
    run_dir = tmp_path / "runs" / "tracked"
    run_id = (run_dir / run_plumbing.WANDB_ID_FILE).read_text().strip()
    assert len(run_id) == 8
    tensorboard_first = {(tag, step): value for tag, rows in read_scalars(run_dir).items() for step, value in rows}

    resumed = run_python(
        tmp_path, "sac_baseline.py", "--resume", str(run_dir / "checkpoint.pt"), "--total-timesteps", "150", "--track"
    )
    assert resumed.returncode == 0, resumed.stderr
    assert (run_dir / run_plumbing.WANDB_ID_FILE).read_text().strip() == run_id
    tensorboard = {(tag, step): value for tag, rows in read_scalars(run_dir).items() for step, value in rows}

    files = sorted(glob.glob(str(tmp_path / "runs" / "wandb" / "offline-run-*" / "run-*.wandb")))
    assert len(files) == 2 and not glob.glob(str(run_dir / "wandb"))  # W&B's files beside the run folders
    runs = [wandb_run(path) for path in files]
    for wandb_id, name, project, config, _ in runs:  # one W&B run, named after the run folder, Args as config
        assert (wandb_id, name, project) == (run_id, "tracked", "sgqn")
        assert config["env_id"] == '"cartpole-swingup"' and config["num_filters"] == "8" and config["track"] == "true"
    # Each run's file holds its own stretch of the TensorBoard scalars, each once, with TensorBoard's values.
    first_scalars, resumed_scalars = runs[0][4], runs[1][4]
    assert first_scalars.keys() == tensorboard_first.keys()
    assert resumed_scalars.keys() == tensorboard.keys() - tensorboard_first.keys()
    assert {key for key in resumed_scalars if key[1] <= 100} == set()
    for key, value in (first_scalars | resumed_scalars).items():
        assert value == pytest.approx(tensorboard[key], rel=1e-6), key
    assert {step for tag, step in tensorboard if tag == "eval/train/episodic_return"} == {50, 100, 150}


def test_track_without_wandb_is_one_error_line_before_anything_starts(tmp_path):
    message = f"--track logs to Weights & Biases, which is not installed: {run_plumbing.WANDB_INSTALL}"
    out = run_python(tmp_path, "sac_baseline.py", *FLAGS, "--track", hide_wandb=True)
    assert out.returncode == 1 and out.stderr.strip() == f"error: {message}" and out.stdout == "", out.stderr
    assert not os.path.exists(tmp_path / "runs")  # nothing made
    assert run_plumbing.WANDB_INSTALL.split()[-1] in open(os.path.join(ROOT, "requirements-test.txt")).read()

    grid = ["--methods", "sac_baseline.py", "--env-ids", "cartpole-swingup", "--seeds", "1", "--cluster", "local"]
    out = run_python(tmp_path, "experiments/sweep.py", *grid, "--", *FLAGS[2:], "--track", hide_wandb=True)
    assert out.returncode == 1 and out.stderr.strip() == f"error: cartpole-swingup__sac_baseline__1: {message}", out
    assert not os.path.exists(tmp_path / "runs" / "cartpole-swingup__sac_baseline__1")
