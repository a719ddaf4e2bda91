"""Run plumbing of both scripts (run_plumbing.py), for real: signals sent to a running script (a
subprocess on a real DMC task), resuming (checkpoints of earlier code too), the files of a run
(args.json, evaluations.csv, summary.json), --eval-checkpoint, argument checks (flags given on the
command line), the console, the random streams."""

import csv
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import types

import common
import numpy as np
import pytest
import torch
from common import ROOT, TINY

import envs
import run_plumbing
import sac_baseline as sac
import sgqn

# cartpole-swingup with tiny networks; 20 physics steps per agent step make 50-step episodes (short evaluations).
SMALL = [
    "--env-id",
    "cartpole-swingup",
    "--action-repeat",
    "20",
    "--num-conv-layers",
    "2",
    "--num-filters",
    "8",
    "--projection-dim",
    "16",
    "--hidden-dim",
    "32",
    "--image-size",
    "32",
    "--batch-size",
    "16",
    "--learning-starts",
    "20",
    "--eval-episodes",
    "1",
    "--eval-modes",
    "train",
    "video_hard",
    "--eval-freq",
    "50",
    "--save-freq",
    "50",
]
RESUME_LINE = re.compile(r"interrupted at step (\d+); resume with: python (sac_baseline|sgqn)\.py --resume (\S+)")


def start(tmp_path, script, *flags):
    return subprocess.Popen(
        [sys.executable, os.path.join(ROOT, f"{script}.py"), *flags],
        cwd=tmp_path,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "OMP_NUM_THREADS": "1"},
    )


def interrupt_after_first_checkpoint(process, signum, to_group):
    """Send `signum` once the first checkpoint is written (to the whole process group, as a
    terminal's Ctrl-C does, or to the script alone, as `kill` does). Returns stdout, stderr and
    the seconds from the signal until the script and its workers are gone."""
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.startswith("checkpoint saved"):
            break
    time.sleep(1.0)  # into the next stretch of training
    sent = time.monotonic()
    os.killpg(process.pid, signum) if to_group else os.kill(process.pid, signum)
    out, err = process.communicate(timeout=180)  # returns once every holder of the pipes (the workers too) is gone
    return "".join(seen) + out, err, time.monotonic() - sent


def evaluation_rows(run_dir):
    with open(os.path.join(run_dir, "evaluations.csv"), newline="") as f:
        return list(csv.reader(f))


def last_evaluation(rows):
    """{mode: mean return} of the last evaluation in evaluations.csv's rows (one episode per mode here)."""
    last = max(int(row[0]) for row in rows[1:])
    return {row[2]: pytest.approx(float(row[4])) for row in rows[1:] if int(row[0]) == last}


def summary(run_dir):
    with open(os.path.join(run_dir, "summary.json")) as f:
        return json.load(f)


@pytest.mark.parametrize(
    "script, signum, to_group",
    [
        ("sac_baseline", signal.SIGINT, True),  # Ctrl-C in a terminal: the whole process group
        ("sgqn", signal.SIGTERM, False),  # `kill`, a scheduler's notice: the script only
    ],
)
def test_a_signal_checkpoints_exits_cleanly_and_resume_continues(tmp_path, script, signum, to_group):
    process = start(tmp_path, script, "--total-timesteps", "150", *SMALL)
    out, err, exit_seconds = interrupt_after_first_checkpoint(process, signum, to_group)
    assert process.returncode == 128 + signum  # 130 for SIGINT, 143 for SIGTERM
    assert exit_seconds < 60, exit_seconds
    assert err == "", err  # no tracebacks from the script or its eval workers
    assert "device: CPU" in out and "run folder runs/" in out
    assert "replay buffer: 155 frames" in out  # 150 steps + 3 episode starts + 2, not --buffer-size's 500000
    match = RESUME_LINE.fullmatch(out.strip().splitlines()[-1])
    assert match and match[2] == script, out
    step, checkpoint = int(match[1]), match[3]
    run_dir = os.path.dirname(os.path.join(tmp_path, checkpoint))
    assert 50 < step < 150 and torch.load(os.path.join(tmp_path, checkpoint), weights_only=False)["step"] == step
    assert summary(run_dir) | {"wall_time_s": 0} == {
        "status": "interrupted",
        "step": step,
        "total_timesteps": 150,
        "wall_time_s": 0,
        "last_evaluation": last_evaluation(evaluation_rows(run_dir)),
        "checkpoint": checkpoint,
        "algorithm": script,
    }
    first_wall_time = summary(run_dir)["wall_time_s"]

    resumed = start(tmp_path, script, "--resume", checkpoint)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and err == "", err
    assert f"resumed at step {step}; its replay buffer was not saved" in out
    assert torch.load(os.path.join(tmp_path, checkpoint), weights_only=False)["step"] == 150
    rows = evaluation_rows(run_dir)
    assert rows[0] == ["step", "frames", "mode", "episode", "return"]
    assert [row[:4] for row in rows[1:]] == [
        [str(s), str(s * 20), mode, "0"] for s in (50, 100, 150) for mode in ("train", "video_hard")
    ]
    done = summary(run_dir)
    assert done["status"] == "finished" and done["step"] == 150 and done["wall_time_s"] > first_wall_time
    assert done["last_evaluation"] == last_evaluation(rows) and last_evaluation(rows)["train"] == float(rows[-2][4])


def test_eval_workers_are_quiet_when_the_script_is_killed(tmp_path):
    """SIGKILL cannot be handled: the script dies at once, and its eval workers must leave without
    EOFError / BrokenPipeError tracebacks. The checkpoint before it is intact and resumable."""
    process = start(tmp_path, "sac_baseline", "--total-timesteps", "100000", *SMALL)
    out, err, exit_seconds = interrupt_after_first_checkpoint(process, signal.SIGKILL, to_group=False)
    assert process.returncode == -signal.SIGKILL and exit_seconds < 30
    assert "Traceback" not in err and "Error" not in err, err
    checkpoint = re.search(r"checkpoint saved: (\S+)", out)[1]
    assert torch.load(os.path.join(tmp_path, checkpoint), weights_only=False)["step"] == 50


def test_only_the_settotalmass_warning_is_silenced(caplog):
    """dm_control's cheetah (and every eval worker building one) logged MuJoCo's deprecation of
    `settotalmass` through absl at each model load; other absl warnings still come through."""
    with caplog.at_level("WARNING"):
        envs.make_env("cheetah-run", 1, image_size=32)
        envs.logging.getLogger("absl").warning("another warning")
    assert "settotalmass" not in caplog.text and "another warning" in caplog.text


# ----------------------------------------------------------------------------- in-process (toy task)
def toy_args(module, **overrides):
    return module.Args(
        **{
            **TINY,
            **dict(
                env_id="toy-reach",
                learning_starts=10,
                eval_episodes=1,
                eval_modes=("train",),
                buffer_size=500,
                eval_freq=20,
                save_freq=20,
                console_freq=10**6,
            ),
            **overrides,
        }
    )


@pytest.mark.parametrize("module", [sac, sgqn], ids=["sac_baseline", "sgqn"])
def test_an_interrupt_in_the_first_updates_burst_keeps_its_updates_and_resume_finishes_it(toy_envs, monkeypatch, module):
    """SIGUSR1 (a scheduler's early warning) during the learning_starts burst: main() stops after
    the update in flight, checkpoints the 5 burst updates made, restores the caller's signal
    handlers and raises Interrupted(exit_code 138). A resume with the saved buffer makes only the
    burst's 95 remaining updates (a requeued job loses at most the update in flight)."""
    steps, signalled, real_update = [], [], module.update

    def update(agent, batch, step, *rest):
        steps.append(step)
        if len(steps) == 5 and not signalled:  # the first run's fifth update
            signalled.append(os.kill(os.getpid(), signal.SIGUSR1))
        return real_update(agent, batch, step, *rest)

    monkeypatch.setattr(module, "update", update)
    previous = signal.getsignal(signal.SIGUSR1)
    args = toy_args(module, learning_starts=100, total_timesteps=110, eval_freq=1000, save_freq=1000, save_buffer=True)
    with pytest.raises(run_plumbing.Interrupted) as interrupted:
        module.main(args)
    assert steps == [100] * 5  # stopped within one update of the signal
    assert (interrupted.value.signum, interrupted.value.step, interrupted.value.exit_code) == (signal.SIGUSR1, 100, 138)
    assert signal.getsignal(signal.SIGUSR1) is previous
    run_dir = os.path.dirname(interrupted.value.checkpoint)
    assert summary(run_dir)["status"] == "interrupted" and summary(run_dir)["step"] == 100
    state = torch.load(interrupted.value.checkpoint, weights_only=False)
    assert (state["step"], state["burst_updates"]) == (100, 5)

    steps.clear()
    module.main(dataclasses.replace(args, resume=interrupted.value.checkpoint))
    assert steps == [100] * 95 + list(range(101, 110))
    assert summary(run_dir)["status"] == "finished"
    assert torch.load(interrupted.value.checkpoint, weights_only=False)["burst_updates"] == 0


@pytest.mark.parametrize("module", [sac, sgqn], ids=["sac_baseline", "sgqn"])
def test_keep_checkpoints_keeps_each_periodic_checkpoint_without_the_buffer(toy_envs, module):
    """--keep-checkpoints: each periodic checkpoint is also kept as checkpoint_step{N}.pt, with the
    networks of that step and no buffer (checkpoint.pt keeps it); each one evaluates."""
    args = toy_args(module, total_timesteps=60, save_freq=20, save_buffer=True, keep_checkpoints=True)
    run_dir = module.main(args)
    kept = sorted(f for f in os.listdir(run_dir) if f.startswith("checkpoint_step"))
    assert kept == ["checkpoint_step20.pt", "checkpoint_step40.pt", "checkpoint_step60.pt"]
    states = {f: torch.load(os.path.join(run_dir, f), weights_only=False) for f in kept}
    assert [s["step"] for s in states.values()] == [20, 40, 60]
    assert all(s["buffer"] is None for s in states.values())
    assert torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=False)["buffer"] is not None
    weights = [s["agent"]["critic"] for s in states.values()]
    name = next(iter(weights[0]))
    assert not torch.equal(weights[0][name], weights[2][name])  # the networks of their own step
    assert torch.equal(
        weights[2][name], torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=False)["agent"]["critic"][name]
    )
    returns = module.main(
        module.Args(eval_checkpoint=os.path.join(run_dir, "checkpoint_step20.pt"), eval_modes=("train",), eval_episodes=1)
    )
    assert returns["train"].shape == (1,)
    plain = module.main(dataclasses.replace(args, run_name="plain", keep_checkpoints=False))
    assert "checkpoint.pt" in os.listdir(plain) and not any(f.startswith("checkpoint_step") for f in os.listdir(plain))


def test_an_evaluation_cut_short_is_made_on_resume_once(toy_envs, monkeypatch):
    """An interrupt during an evaluation abandons it (an evaluation can take minutes); the checkpoint
    is written at that step and the resumed run evaluates it first: no gap, no repeat."""
    real_evaluate = sac.evaluate

    def evaluate(agent, eval_envs, args, device, quantile, video_dir=None, step=0, stop=None):
        if step == 40:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_evaluate(agent, eval_envs, args, device, quantile, video_dir, step, stop)

    monkeypatch.setattr(sac, "evaluate", evaluate)
    args = toy_args(sac, total_timesteps=60, eval_modes=("train", "color_hard"))
    with pytest.raises(run_plumbing.Interrupted) as interrupted:
        sac.main(args)
    run_dir = os.path.dirname(interrupted.value.checkpoint)
    assert interrupted.value.step == 40 and interrupted.value.exit_code == 143
    assert [row[0] for row in evaluation_rows(run_dir)[1:]] == ["20", "20"]
    assert summary(run_dir)["last_evaluation"].keys() == {"train", "color_hard"}

    monkeypatch.setattr(sac, "evaluate", real_evaluate)
    sac.main(sac.Args(resume=interrupted.value.checkpoint))  # by hand: only the checkpoint
    assert [(row[0], row[2]) for row in evaluation_rows(run_dir)[1:]] == [
        (str(s), mode) for s in (20, 40, 60) for mode in ("train", "color_hard")
    ]


def test_run_files_round_trip_and_resume_drops_rows_after_its_checkpoint(toy_envs, monkeypatch, tmp_path):
    """A run killed after an evaluation but before the checkpoint that follows it: the resumed run
    trains that stretch again, so evaluations.csv drops the rows past the checkpoint first. Also:
    args.json reads back into Args, a launcher's full Args + resume works, safe flags change,
    others are refused in one line."""
    real_save = run_plumbing.save_checkpoint

    def save_checkpoint(path, algorithm, agent, args, step, *rest):
        real_save(path, algorithm, agent, args, step, *rest)
        if step == 40:
            shutil.copy(path, tmp_path / "step40.pt")

    monkeypatch.setattr(run_plumbing, "save_checkpoint", save_checkpoint)
    args = toy_args(sac, total_timesteps=60, save_freq=40, run_name="stable", runs_dir="sweep")
    run_dir = sac.main(args)
    assert run_dir == os.path.join("sweep", "stable")
    first = evaluation_rows(run_dir)
    assert [row[0] for row in first[1:]] == ["20", "40", "60"]
    saved = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=False)["args"]
    assert (
        dataclasses.asdict(run_plumbing.read_args(os.path.join(run_dir, "args.json"), sac.SCRIPT))
        == saved
        == dataclasses.asdict(args)
    )
    with open(os.path.join(run_dir, "args.json")) as f:
        assert json.load(f)["algorithm"] == "sac_baseline"
    with pytest.raises(envs.ConfigError, match="is from sac_baseline.py, not sgqn.py"):
        run_plumbing.read_args(os.path.join(run_dir, "args.json"), sgqn.SCRIPT)

    checkpoint = os.path.join(run_dir, "checkpoint.pt")
    shutil.copy(tmp_path / "step40.pt", checkpoint)  # as if killed after the evaluation at 60, before its checkpoint
    for conflict, message in (
        (dict(num_filters=4), r"--num-filters 4 \(checkpoint: 8\): contradicts the checkpoint"),
        (dict(seed=7), r"--seed 7 \(checkpoint: 1\)"),
        (dict(augmentation="shift"), r"--augmentation shift \(checkpoint: none\)"),
    ):
        with pytest.raises(envs.ConfigError, match=message):
            sac.main(dataclasses.replace(args, resume=checkpoint, **conflict))
    # A launcher resumes with the run's full Args; the evaluation frequency and the length may change.
    sac.main(dataclasses.replace(args, resume=checkpoint, eval_freq=10, total_timesteps=70))
    rows = evaluation_rows(run_dir)
    assert rows[:3] == first[:3]  # the rows up to the checkpoint, untouched
    assert [row[0] for row in rows[1:]] == ["20", "40", "50", "60", "70"]
    effective = run_plumbing.read_args(os.path.join(run_dir, "args.json"), sac.SCRIPT)
    assert (effective.eval_freq, effective.total_timesteps, effective.resume) == (10, 70, checkpoint)
    assert summary(run_dir)["step"] == 70 and summary(run_dir)["status"] == "finished"


@pytest.mark.parametrize("module", [sac, sgqn])
def test_eval_checkpoint_takes_env_and_architecture_from_the_checkpoint(toy_envs, module):
    run_dir = module.main(toy_args(module, total_timesteps=20))
    checkpoint = os.path.join(run_dir, "checkpoint.pt")
    # No env id and no architecture flags: the defaults (walker-walk, paper size) give way to the checkpoint's.
    returns = module.main(module.Args(eval_checkpoint=checkpoint, eval_episodes=2, eval_modes=("train", "color_hard")))
    rows = evaluation_rows(os.path.join(run_dir))  # the run's own file is untouched by the evaluation
    assert [row[0] for row in rows[1:]] == ["20"]
    rows = list(csv.DictReader(open(os.path.join(run_dir, "eval_checkpoint_step20.csv"))))
    assert [(r["step"], r["frames"], r["mode"], r["episode"]) for r in rows] == [
        ("20", "20", mode, str(e)) for mode in ("train", "color_hard") for e in (0, 1)
    ]
    np.testing.assert_array_equal(
        [float(r["return"]) for r in rows], np.concatenate([returns["train"], returns["color_hard"]])
    )
    with pytest.raises(envs.ConfigError, match=r"--hidden-dim 64 \(checkpoint: 32\)"):
        module.main(module.Args(eval_checkpoint=checkpoint, hidden_dim=64))
    # The run was evaluated on train only, 1 episode; an evaluation asked with the defaults gets the
    # defaults (all five modes, 10 episodes), not the run's settings (they were kept: a defect).
    returns = module.main(module.Args(eval_checkpoint=checkpoint, eval_csv=os.path.join(run_dir, "defaults.csv")))
    assert {mode: len(r) for mode, r in returns.items()} == {mode: 10 for mode in envs.MODES}


@pytest.mark.parametrize("module", [sac, sgqn], ids=["sac_baseline", "sgqn"])
def test_checkpoints_written_before_run_plumbing_still_resume_and_evaluate(toy_envs, capsys, module):
    """tests/data/{script}_a8a74c5.pt: 20 steps of toy-reach with networks of 2 convs x 2 filters, written
    by the scripts of commit a8a74c5 (before run_plumbing.py); sgqn's holds its replay buffer, sac's
    none. Today's code evaluates them and resumes them to the end."""
    run_dir = os.path.join("runs", f"toy-reach__{module.__name__}__1")
    checkpoint = os.path.join(run_dir, "checkpoint.pt")
    os.makedirs(run_dir)
    shutil.copy(os.path.join(ROOT, "tests", "data", f"{module.__name__}_a8a74c5.pt"), checkpoint)
    returns = module.main(module.Args(eval_checkpoint=checkpoint, eval_modes=("train", "color_hard"), eval_episodes=2))
    assert {mode: r.shape for mode, r in returns.items()} == {"train": (2,), "color_hard": (2,)}
    assert module.main(module.Args(resume=checkpoint, total_timesteps=30)) == run_dir
    out = capsys.readouterr().out
    resumed = " with 21 frames in the replay buffer" if module is sgqn else "; its replay buffer was not saved"
    assert f"resumed at step 20{resumed}" in out and "finished 30 steps" in out, out
    state = torch.load(checkpoint, weights_only=False)
    assert state["step"] == 30 and state["args"]["num_filters"] == 2 and summary(run_dir)["status"] == "finished"
    # No evaluations.csv came with the checkpoint: its step counts as not evaluated, and is evaluated first.
    assert [row[0] for row in evaluation_rows(run_dir)[1:]] == ["20", "30"]


def test_the_buffer_and_the_overlay_draw_from_independent_streams(toy_envs, monkeypatch):
    """Both used to be seeded with --seed itself: in the first burst the overlay image index was a
    near-linear function of the sampled transition (correlation 0.999998). Every consumer now gets
    its own stream spawned from one SeedSequence; the same seed still gives the same streams."""
    seeds = []
    real_buffer, real_overlay = sgqn.ReplayBuffer, envs.OverlayImages
    monkeypatch.setattr(sgqn, "ReplayBuffer", lambda *a: seeds.append(("buffer", a[-1])) or real_buffer(*a))
    monkeypatch.setattr(
        envs, "OverlayImages", lambda d, size, seed: seeds.append(("overlay", seed)) or real_overlay(d, size, seed)
    )
    for _ in range(2):
        sgqn.main(toy_args(sgqn, total_timesteps=12, sgqn_quantile=0.9))
    (buffer_seed, buffer_again), (overlay_seed, overlay_again) = (
        [seed for name, seed in seeds if name == consumer] for consumer in ("buffer", "overlay")
    )
    transitions = np.random.default_rng(buffer_seed).integers(0, 1005, 4096)
    images = np.random.default_rng(overlay_seed).integers(500, size=4096)
    assert abs(np.corrcoef(transitions, images)[0, 1]) < 0.05
    np.testing.assert_array_equal(np.random.default_rng(buffer_again).integers(0, 1005, 64), transitions[:64])
    np.testing.assert_array_equal(np.random.default_rng(overlay_again).integers(500, size=64), images[:64])
    # What the old seeding did, for contrast: the test can tell.
    old = np.random.default_rng(1).integers(0, 1005, 4096), np.random.default_rng(1).integers(500, size=4096)
    assert np.corrcoef(*old)[0, 1] > 0.99


# ----------------------------------------------------------------------------- argument checks
BAD = [
    (dict(env_id="nope-nope"), "unknown env id 'nope-nope'"),
    (dict(eval_modes=()), "--eval-modes is empty"),
    (dict(eval_modes=("train", "fog")), "unknown mode 'fog'"),
    (dict(eval_modes=("train", "train")), "listed twice"),
    (dict(eval_freq=0), "--eval-freq 0: must be at least 1"),
    (dict(batch_size=-3), "--batch-size -3: must be at least 1"),
    (dict(learning_starts=-1), "--learning-starts -1"),
    (dict(num_conv_layers=40), "--num-conv-layers 40 leaves no pixels"),
    (dict(video_hard_dir="/no/such/folder"), "--video-hard-dir /no/such/folder: no such folder"),
    (dict(davis_dir="/no/such/folder", eval_modes=("distracting_cs_hard",)), "--davis-dir /no/such/folder: no such folder"),
    (dict(env_id="hopper-hop", eval_modes=("distracting_cs_easy",)), "distracting_cs"),
    (dict(resume="missing.pt"), "checkpoint not found: missing.pt"),
    (dict(resume="a_folder"), "--resume a_folder: a folder without checkpoint.pt"),
    (dict(eval_checkpoint="a_folder"), "--eval-checkpoint a_folder: a folder without checkpoint.pt"),
    (dict(resume="runs/taken"), "cannot read checkpoint runs/taken/checkpoint.pt"),  # a run folder: its checkpoint.pt
    (dict(eval_checkpoint="corrupt.pt"), "cannot read checkpoint corrupt.pt"),
    (dict(resume="a.pt", eval_checkpoint="b.pt"), "not both"),
    (dict(runs_dir="a_file"), "cannot make the run folder"),
    (dict(run_name="taken"), "already holds a run: continue it with --resume runs/taken/checkpoint.pt"),
]


@pytest.mark.parametrize("module", [sac, sgqn])
def test_bad_input_is_one_line_before_any_env_is_built_and_fast(module, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "a_file").write_text("")
    os.makedirs(tmp_path / "a_folder")
    os.makedirs(tmp_path / "runs" / "taken")
    (tmp_path / "runs" / "taken" / "checkpoint.pt").write_bytes(b"")

    def no_env(*args, **kwargs):
        raise AssertionError("an env was built before the arguments were checked")

    monkeypatch.setattr(envs, "make_env", no_env)
    bad = BAD + (
        [(dict(sgqn_quantile=1.5), "--sgqn-quantile 1.5"), (dict(overlay_dir="/no/where"), "--overlay-dir /no/where")]
        if module is sgqn
        else []
    )
    envs.check_args("cartpole-swingup")  # the first check imports dm_control's suite: not timed below
    for overrides, message in bad:
        started = time.perf_counter()
        with pytest.raises(envs.ConfigError) as error:
            module.main(module.Args(**overrides))
        assert message in str(error.value) and "\n" not in str(error.value), (overrides, str(error.value))
        assert time.perf_counter() - started < 2, overrides
    assert os.listdir(tmp_path / "runs") == ["taken"]  # nothing was started


def test_cli_bad_input_exits_with_one_error_line(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "sgqn.py"), "--eval-modes"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: --eval-modes is empty: give one or more of {' '.join(envs.ALL_MODES)}"
    ]


def help_entry(text, flag):
    """One flag's entry in tyro's --help box: its row and the indented rows it wraps onto, joined."""
    rows = [line.strip("│").rstrip() for line in text.splitlines()]
    start = next(i for i, row in enumerate(rows) if row.startswith(f" {flag} "))
    entry = [rows[start]]
    for row in rows[start + 1 :]:
        if not row.startswith("   ") or not row.strip():  # the next flag, or the box's end
            break
        entry.append(row)
    return " ".join(" ".join(entry).split())


@pytest.mark.parametrize("script", ["sac_baseline.py", "sgqn.py", "soda.py"])
def test_help_gives_eval_csv_one_default(script, tmp_path):
    """tyro adds "(default: None)" to an Optional field's help: its docstring says what None means instead
    of giving a second default."""
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, script), "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "120"},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    entry = help_entry(result.stdout, "--eval-csv")
    assert entry.count("default") == 1 and entry.endswith("(default: None)"), entry
    assert "None: eval_checkpoint_step{N}.csv beside the checkpoint" in entry, entry


@pytest.fixture(scope="module")
def cartpole_checkpoint(tmp_path_factory):
    """A checkpoint of a tiny sac_baseline.py run on cartpole-swingup (10 random steps, 10 updates)."""
    runs_dir = tmp_path_factory.mktemp("cartpole") / "runs"
    args = sac.Args(
        env_id="cartpole-swingup",
        action_repeat=20,
        total_timesteps=20,
        learning_starts=10,
        eval_freq=20,
        eval_episodes=1,
        eval_modes=("train",),
        num_conv_layers=2,
        num_filters=8,
        projection_dim=16,
        hidden_dim=32,
        image_size=32,
        batch_size=8,
        runs_dir=str(runs_dir),
        run_name="cartpole",
    )
    return os.path.join(sac.main(args), "checkpoint.pt")


@pytest.mark.parametrize("flags, conflict", [
    (["--resume", "{checkpoint}", "--env-id", "walker-walk"], "--env-id walker-walk (checkpoint: cartpole-swingup)"),
    (["--resume", "{checkpoint}", "--num-filters", "32"], "--num-filters 32 (checkpoint: 8)"),
    (["--eval-checkpoint", "{checkpoint}", "--hidden-dim=1024"], "--hidden-dim 1024 (checkpoint: 32)"),
])  # fmt: skip
def test_a_flag_given_at_its_default_that_contradicts_the_checkpoint_is_refused(
    cartpole_checkpoint, tmp_path, flags, conflict
):
    """walker-walk, 32 filters and 1024 hidden units are the defaults: that the command line gives
    them is what counts (they used to be ignored, and the run went on as cartpole with 8 filters)."""
    flags = [flag.format(checkpoint=cartpole_checkpoint) for flag in flags]
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "sac_baseline.py"), *flags],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 1 and result.stdout == "", result.stdout + result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: {conflict}: contradicts the checkpoint {cartpole_checkpoint}; drop it"), line
    assert torch.load(cartpole_checkpoint, weights_only=False)["step"] == 20


def test_the_fields_given_are_those_the_command_line_names_in_any_of_tyros_spellings():
    argv = [
        "--env-id",
        "walker-walk",
        "--num_filters=32",
        "--no-cuda",
        "--eval-modes",
        "train",
        "video_hard",
        "--no_channels_last",
        "--save-buffer",
    ]
    args, given = run_plumbing.parse_cli(sgqn.Args, argv)
    assert given == {"env_id", "num_filters", "cuda", "eval_modes", "channels_last", "save_buffer"}
    assert (args.num_filters, args.cuda, args.channels_last, args.save_buffer) == (32, False, False, True)
    assert args.eval_modes == ("train", "video_hard")
    for argv, message in (
        (["--num-filter", "8"], "unrecognized --num-filter 8 (did you mean --num-filters?)"),
        (["--num-filters", "eight"], "--num-filters"),
    ):
        with pytest.raises(envs.ConfigError) as error:
            run_plumbing.parse_cli(sgqn.Args, argv)
        assert message in str(error.value) and "\n" not in str(error.value), error.value


# ----------------------------------------------------------------------------- signals and console
def test_stop_signals_are_installed_in_the_main_thread_only_and_restored():
    previous = {s: signal.getsignal(s) for s in envs.STOP_SIGNALS}
    with run_plumbing.stop_signals() as stop:
        assert all(signal.getsignal(s) not in (previous[s], signal.SIG_DFL) for s in envs.STOP_SIGNALS)
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt: only recorded
        time.sleep(0.01)
        assert stop.signum == signal.SIGINT
    assert {s: signal.getsignal(s) for s in envs.STOP_SIGNALS} == previous

    seen = []
    thread = threading.Thread(target=lambda: seen.append(run_plumbing.stop_signals().__enter__().signum))
    thread.start()
    thread.join()
    assert seen == [None] and {s: signal.getsignal(s) for s in envs.STOP_SIGNALS} == previous


def test_console_never_goes_quiet_in_the_burst_and_gives_an_eta_once_updates_run(toy_envs, monkeypatch, capsys):
    monkeypatch.setattr(run_plumbing, "QUIET_SECONDS", 0.0)  # every chance to print is taken
    args = toy_args(sac, learning_starts=30, total_timesteps=40, eval_freq=40, save_freq=40)
    run_dir = sac.main(args)
    out = capsys.readouterr().out
    burst = [line for line in out.splitlines() if re.search(r"first updates \d+/", line)]
    assert len(burst) == 30 and burst[0].startswith("step 30/40  first updates 1/30, ")
    progress = [line for line in out.splitlines() if re.match(r"step \d+/40  SPS", line)]
    assert all("ETA after the first updates" in line for line in progress if int(line.split()[1].split("/")[0]) <= 30)
    assert re.search(r"step 40/40  SPS [\d.]+  ETA 0min 00s  last return", out)
    # Resumed without its buffer, the run acts without updates until it holds 30 new frames: no ETA
    # from those fast steps either.
    sac.main(dataclasses.replace(args, resume=os.path.join(run_dir, "checkpoint.pt"), total_timesteps=80))
    out = capsys.readouterr().out
    assert "updates wait for 30 new frames (--learning-starts)" in out
    etas = {int(m[1]): m[2] for m in re.finditer(r"step (\d+)/80  SPS \S+  ETA (.+?)  last return", out)}
    assert set(etas) == set(range(41, 81))
    waiting = [step for step, eta in etas.items() if eta == "after the first updates"]
    assert waiting == list(range(41, waiting[-1] + 1)) and 65 < waiting[-1] < 75 and etas[80] == "0min 00s"
    assert run_plumbing.duration(3 * 3600 + 5 * 60 + 9) == "3h 05min" and run_plumbing.duration(252) == "4min 12s"


def test_the_progress_line_names_no_return_before_an_episode_has_ended(toy_envs, monkeypatch, capsys):
    monkeypatch.setattr(run_plumbing, "QUIET_SECONDS", 0.0)  # a line at every step
    run_dir = sac.main(toy_args(sac, total_timesteps=60, eval_freq=60, save_freq=60))
    returns = {m[1]: m[2] for m in re.finditer(r"step (\d+)/60  SPS .*  last return (\S+)", capsys.readouterr().out)}
    episode_end, first_return = common.read_scalars(run_dir)["charts/episodic_return"][0]
    assert episode_end == 49  # the toy task's 50-step episode
    assert {returns[str(step)] for step in range(1, 50)} == {"-"}  # not `nan`
    assert {returns[str(step)] for step in range(50, 60)} == {f"{first_return:.1f}"}


def test_start_block_states_device_memory_and_the_cpu_note(tmp_path, capsys):
    for module, args in ((sac, sac.Args(total_timesteps=3000)), (sgqn, sgqn.Args(total_timesteps=3000, num_filters=16))):
        agent = module.make_agent((9, 84, 84), 6, args, torch.device("cpu"))
        buffer = module.ReplayBuffer(run_plumbing.buffer_capacity(args, 250), (3, 84, 84), 6, 3, "cpu", 0)
        run_plumbing.describe_start(module.ALGORITHM, args, torch.device("cpu"), "runs/x", agent, buffer)
    paper, small = capsys.readouterr().out.split("sgqn.py on")
    assert "device: CPU, " in paper and "run folder runs/x" in paper and "11 convs x 32 filters" in paper
    assert "replay buffer: 3014 frames x 21208 bytes = 61.0 MiB (--buffer-size 500000" in paper  # 3000 + 12 episodes + 2
    assert "see README 'Quick look on a laptop'" in paper and "README" not in small
    assert run_plumbing.buffer_capacity(sac.Args(total_timesteps=3000), 125) == 3000 + 3000 // 125 + 2
    assert run_plumbing.buffer_capacity(sac.Args(total_timesteps=3000), None) == 2 * 3000 + 1  # episode length unknown
    assert run_plumbing.buffer_capacity(sac.Args(total_timesteps=10**6), 250) == 500_000


class FakeClock:
    """time.time() for run_plumbing alone: each call moves it on by a second, so that every check of
    the console and every line takes time, and an evaluation (a check per step) takes far longer than
    a training step (a few calls)."""

    def __init__(self):
        self.now = 1_000_000.0

    def time(self):
        self.now += 1.0
        return self.now


class StampedOutput:
    """sys.stdout that notes the clock's time of each line written."""

    def __init__(self, clock):
        self.clock, self.lines = clock, []

    def write(self, text):
        self.lines += [(self.clock.now, line) for line in text.splitlines() if line]

    def flush(self):
        pass


def test_the_console_is_never_quiet_for_long_and_an_evaluation_does_not_upset_the_eta(toy_envs, monkeypatch):
    """On run_plumbing's clock (FakeClock): from the start block to the end, no silence longer than
    QUIET_SECONDS and a step, through the burst and inside each evaluation's episodes (they used to
    print only between episodes), and the first line after an evaluation shows the training rate (the
    evaluation's time used to enter the rate: `SPS 0.01 ETA 2h 02min` for a 300-step run)."""
    clock = FakeClock()
    monkeypatch.setattr(run_plumbing, "time", types.SimpleNamespace(time=clock.time))
    monkeypatch.setattr(run_plumbing, "QUIET_SECONDS", 20)
    out = StampedOutput(clock)
    monkeypatch.setattr(sys, "stdout", out)
    sac.main(
        toy_args(
            sac,
            learning_starts=20,
            total_timesteps=60,
            eval_freq=30,
            eval_episodes=3,
            eval_modes=("train", "color_hard"),
            console_freq=10,
        )
    )
    monkeypatch.undo()
    start = next(i for i, (_, line) in enumerate(out.lines) if line.startswith("sac_baseline.py on toy-reach"))
    times = [t for t, _ in out.lines[start:]]
    assert max(np.diff(times)) <= 20 + 5, out.lines  # a training step takes a few calls of the clock
    text = [line for _, line in out.lines]
    assert any(re.fullmatch(r"evaluating: episode [12]/3, step \d+", line) for line in text), text
    assert any(
        re.fullmatch(r"step 20/60  first updates \d+/20, .* to go; the run's updates about .* more", line) for line in text
    ), text
    sps = [(int(m[1]), float(m[2])) for line in text if (m := re.match(r"step (\d+)/60  SPS ([\d.]+)", line))]
    before = [rate for step, rate in sps if 21 <= step <= 30]
    after = next(rate for step, rate in sps if step > 30)
    assert before and after > 0.5 * before[-1], sps


def test_a_blocking_call_gets_a_line_every_quiet_seconds(monkeypatch, capsys):
    """The eval workers' start blocks with no chance to print: Console.waiting prints from a thread."""
    monkeypatch.setattr(run_plumbing, "QUIET_SECONDS", 0.0)  # at most one line a second
    with run_plumbing.CONSOLE.waiting("evaluation workers starting (5)"):
        time.sleep(2.5)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 2, lines  # at 1 s and 2 s (a third if the machine is slow to wake the sleeper)
    assert all(re.fullmatch(r"evaluation workers starting \(5\): 0min 0[1-3]s so far", line) for line in lines), lines


def test_the_console_speaks_before_a_long_step_would_end_past_quiet_seconds(monkeypatch):
    """Steps of 9 s (a paper-size SGQN update on 2 busy cores): a line at most every 25 s, not one
    step after 25 s of silence (every 27 s)."""
    clock = types.SimpleNamespace(now=0.0)
    monkeypatch.setattr(run_plumbing, "time", types.SimpleNamespace(time=lambda: clock.now))
    console, printed = run_plumbing.Console(), [0.0]
    for step in range(1, 40):
        clock.now = 9.0 * step
        if console.due():
            console.print("a line")
            printed.append(clock.now)
    assert len(printed) > 10 and max(np.diff(printed)) <= run_plumbing.QUIET_SECONDS


CRASH = """
import numpy as np
import envs, run_plumbing, sac_baseline, toy_task
envs.make_env = toy_task.make_toy_env
if __name__ == "__main__":
    args = sac_baseline.Args(env_id="toy-reach", eval_modes=("train", "color_hard"), image_size=32)
    eval_envs = run_plumbing.make_eval_envs(args, np.random.SeedSequence(1))
    raise TypeError("a bug")
"""


def test_an_unexpected_exception_ends_the_process_with_its_workers(tmp_path):
    """The eval workers ignore SIGTERM (a Ctrl-C is the parent's to handle): multiprocessing's exit
    handler, which terminates and then joins them, used to wait for them forever after a bug."""
    script = tmp_path / "crash.py"
    script.write_text(CRASH)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.path.join(ROOT, "tests")])}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert result.returncode == 1 and result.stderr.strip().endswith("TypeError: a bug"), result.stderr
