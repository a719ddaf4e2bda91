"""The studies' scripts (docs/results/balance/launch.sh, finish.sh; docs/results/paper_size/launch*.sh) rerun
from any clone: no machine's absolute paths; the python, the runs folder and the frozen commit come from the
environment, with defaults inside the repository. DRY_RUN=1 prints the commands they would run, made here and
read back."""

import os
import re
import shlex
import shutil
import subprocess

from common import ROOT

STUDY = os.path.join(ROOT, "docs", "results", "balance")
PAPER_SIZE = os.path.join(ROOT, "docs", "results", "paper_size")
SET_BY_THE_SCRIPTS = ("COMMIT", "FROZEN", "RUNS", "PYTHON", "THREADS", "FIGURE_COMMIT", "FIGURE_TREE", "DRY_RUN")


def dry_run(script, *arguments, **environment):
    """The lines `script` prints with DRY_RUN=1; `script` is a file name in the balance study or a path."""
    env = {k: v for k, v in os.environ.items() if k not in SET_BY_THE_SCRIPTS}
    result = subprocess.run(
        [os.path.join(STUDY, script), *arguments],
        env={**env, "DRY_RUN": "1", **environment},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()


def test_launch_defaults_are_inside_the_repository():
    (line,) = dry_run("launch.sh", "svea11x16", "sac_baseline.py", "11", "16", "2", "5000", "--augmentation", "svea")
    python = os.path.join(ROOT, ".venv", "bin", "python") if os.path.exists(os.path.join(ROOT, ".venv")) else "python3"
    assert line.startswith(
        f"cd {ROOT} && OMP_NUM_THREADS=1 MUJOCO_GL=egl {python} sac_baseline.py --env-id cartpole-balance --seed 2 "
    )
    assert f"--runs-dir {ROOT}/runs/balance --run-name cartpole-balance__svea11x16__2" in line
    assert line.endswith("--augmentation svea") and "--total-timesteps 5000 --buffer-size 5150" in line
    assert not os.path.exists(os.path.join(ROOT, "runs", "balance", "cartpole-balance__svea11x16__2"))  # nothing made


def test_the_environment_names_the_commit_the_runs_and_the_python(tmp_path):
    env = dict(COMMIT="2663e7e", RUNS=str(tmp_path / "runs"), PYTHON="/opt/py/bin/python", THREADS="2")
    (line,) = dry_run("launch.sh", "sgqn11x16", "sgqn.py", "11", "16", "1", "5000", **env)
    assert line.startswith(f"cd {ROOT}/.frozen/2663e7e && OMP_NUM_THREADS=2 MUJOCO_GL=egl /opt/py/bin/python sgqn.py ")
    assert f"--runs-dir {tmp_path}/runs " in line
    evaluate, figure, copy = dry_run("finish.sh", "sgqn.py", "cartpole-balance__sgqn11x16__1", FIGURE_COMMIT="0b03877", **env)
    run = f"{tmp_path}/runs/cartpole-balance__sgqn11x16__1"
    assert evaluate.startswith(
        f"cd {ROOT}/.frozen/2663e7e && /opt/py/bin/python sgqn.py --eval-checkpoint {run}/checkpoint.pt "
    )
    assert figure.startswith(
        f"cd {ROOT}/.frozen/0b03877 && /opt/py/bin/python experiments/saliency_figure.py {run}/checkpoint.pt "
    )
    assert copy.endswith(f" {STUDY}/runs/cartpole-balance__sgqn11x16__1/")
    assert not os.path.exists(os.path.join(ROOT, ".frozen", "0b03877"))  # a dry run makes no worktree


# The paper_size scripts' sweeps, as launched (after `--`: the flags every run gets)
PAPER_SIZE_SWEEPS = {
    "launch.sh": (
        ["--methods", "sgqn=sgqn.py", "drq=sac_baseline.py --augmentation shift", "--env-ids", "cartpole-swingup"],
        ["--parallel", "2"],
        "--total-timesteps 12500 --eval-freq 1250 --save-freq 1250 --save-buffer --keep-checkpoints --eval-episodes 10",
    ),
    "launch_small.sh": (
        ["--methods", "sgqn=sgqn.py", "drq=sac_baseline.py --augmentation shift", "--env-ids", "cartpole-swingup"],
        ["--parallel", "2"],
        "--num-conv-layers 4 --num-filters 16 --projection-dim 50 --hidden-dim 1024 --batch-size 128 "
        "--total-timesteps 2500 --buffer-size 2600 --eval-freq 625 --eval-episodes 1 --save-freq 625 --save-buffer "
        "--keep-checkpoints",
    ),
    "launch_small_sgqn.sh": (
        ["--methods", "sgqn=sgqn.py", "--env-ids", "cartpole-swingup"],
        ["--parallel", "1"],
        "--num-conv-layers 4 --num-filters 16 --projection-dim 50 --hidden-dim 1024 --batch-size 128 "
        "--total-timesteps 2500 --buffer-size 2600 --eval-freq 625 --eval-episodes 1 --save-freq 625 --save-buffer "
        "--keep-checkpoints",
    ),
}


def paper_size_command(script, tree, threads, python, runs, *arguments):
    """The words of the line `script` prints: cd to the tree, then the sweep."""
    methods, parallel, flags = PAPER_SIZE_SWEEPS[script]
    sweep = [python, "experiments/sweep.py", *methods, "--seeds", "1", "--runs-dir", runs, *parallel]
    return ["cd", tree, "&&", f"OMP_NUM_THREADS={threads}", "MUJOCO_GL=egl", *sweep, "--cluster", "local",
            *arguments, "--", *flags.split()]  # fmt: skip


def test_paper_size_scripts_hold_no_machine_path():
    for script in PAPER_SIZE_SWEEPS:
        text = open(os.path.join(PAPER_SIZE, script)).read()
        assert not re.search(r"(^|[\s=:\"'])/(work|root|home|tmp)/", text, re.MULTILINE), script


def test_paper_size_defaults_are_inside_the_clone(tmp_path):
    # a copy of the scripts in another clone's tree: every path they print is under that clone
    clone = tmp_path / "clone"
    os.makedirs(clone / "docs" / "results" / "paper_size")
    for script in PAPER_SIZE_SWEEPS:
        shutil.copy(os.path.join(PAPER_SIZE, script), clone / "docs" / "results" / "paper_size")
    for script, commit, threads in [
        ("launch.sh", "07d44c7", 1),
        ("launch_small.sh", "f568bb6", 1),
        ("launch_small_sgqn.sh", "f568bb6", 2),
    ]:
        runs = f"{clone}/runs/paper_size" + ("" if script == "launch.sh" else "_small")
        (line,) = dry_run(str(clone / "docs" / "results" / "paper_size" / script), "--status")
        assert shlex.split(line) == paper_size_command(
            script, f"{clone}/.frozen/{commit}", threads, "python3", runs, "--status"
        )
    assert sorted(os.listdir(clone)) == ["docs"]  # a dry run makes no worktree and no runs folder


def test_paper_size_environment_names_the_commit_the_runs_and_the_python(tmp_path):
    env = dict(RUNS=str(tmp_path / "runs"), PYTHON="/opt/py/bin/python", THREADS="3")
    for script in PAPER_SIZE_SWEEPS:
        (line,) = dry_run(os.path.join(PAPER_SIZE, script), COMMIT="abc1234", FROZEN=str(tmp_path / "frozen"), **env)
        assert shlex.split(line) == paper_size_command(script, f"{tmp_path}/frozen", 3, "/opt/py/bin/python", env["RUNS"])
        (line,) = dry_run(os.path.join(PAPER_SIZE, script), COMMIT="", **env)  # empty: the working tree itself
        assert shlex.split(line) == paper_size_command(script, ROOT, 3, "/opt/py/bin/python", env["RUNS"])
    assert not os.path.exists(tmp_path / "frozen")
