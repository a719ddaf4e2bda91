"""The balance study's scripts (docs/results/balance/launch.sh, finish.sh) rerun from any clone: no machine's
absolute paths; the python, the runs folder and the frozen commit come from the environment, with defaults
inside the repository. DRY_RUN=1 prints the commands they would run, made here and read back."""

import os
import subprocess

from common import ROOT

STUDY = os.path.join(ROOT, "docs", "results", "balance")


def dry_run(script, *arguments, **environment):
    env = {k: v for k, v in os.environ.items() if k not in ("COMMIT", "FROZEN", "RUNS", "PYTHON", "FIGURE_COMMIT")}
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
