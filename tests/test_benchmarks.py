"""The benchmarks run from a clean checkout and print what the README quotes."""

import importlib
import importlib.util
import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "algorithm, phases, flags, augmentation",
    [
        ("sac", {"critic", "actor", "target"}, [], "none"),
        ("sgqn", {"overlay", "critic", "actor", "target", "aux", "attribution"}, [], "shift"),
        ("sac", {"critic", "actor", "target"}, ["--shift-copies", "2"], "shift x 2 shifted copies"),
        ("rad", {"critic", "actor", "target"}, [], "crop of 100-px frames"),
        (
            "soda",
            {"overlay", "critic", "actor", "target", "aux"},
            ["--soda-batch-size", "4"],
            "crop of 100-px frames, SODA batch 4",
        ),
    ],
)
def test_update_speed_prints_phases_and_a_last_line(algorithm, phases, flags, augmentation):
    out = subprocess.run(
        [
            sys.executable,
            "benchmarks/update_speed.py",
            "--algorithm",
            algorithm,
            "--batch-size",
            "4",
            "--warmup",
            "1",
            "--steps",
            "2",
            *flags,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = out.strip().splitlines()
    assert f", batch 4, augmentation {augmentation}, 11 convs x 32 filters," in lines[0], lines[0]
    assert re.fullmatch(rf"{algorithm} update ms/step: \d+\.\d", lines[-1])
    table = {line.split()[0]: line.split()[1:] for line in lines if line.split() and line.split()[0] in phases}
    assert set(table) == phases
    assert all(float(odd) >= 0 and float(even) > 0 for name, (odd, even, *_) in table.items() if name != "actor")
    assert float(table["actor"][0]) == 0.0 and float(table["actor"][1]) > 0  # the actor runs on even steps only
    if "aux" in phases:  # SGQN's and SODA's auxiliary steps, and their overlay images: even steps only
        assert float(table["aux"][0]) == float(table["overlay"][0]) == 0.0
    assert "--channels-last" in out and "freed memory kept" in out  # the scripts' defaults


@pytest.mark.parametrize("algorithm", ["svea", "sgqn", "soda", "rad"])
def test_update_speed_fills_the_overlay_pool_first_and_calls_update_as_main_does(algorithm, monkeypatch, capsys):
    """Every overlay draw finds the pool full (its 500 images made before the timed steps, not in them); each
    update gets the batch and the extra arguments its script's main() gives it, at their shapes."""
    import envs

    update_speed = load_benchmark("update_speed")
    module = importlib.import_module({"svea": "sac_baseline", "rad": "sac_baseline"}.get(algorithm, algorithm))
    reads_at_draws, calls = [], []
    real_sample_on, real_update = envs.OverlayImages.sample_on, module.update

    def sample_on(self, n, device):
        reads_at_draws.append(self._reads)
        return real_sample_on(self, n, device)

    def update(agent, batch, step, args, target_entropy, *extra):
        calls.append((step, tuple(batch[0].shape), [None if x is None else tuple(x.shape) for x in extra]))
        return real_update(agent, batch, step, args, target_entropy, *extra)

    monkeypatch.setattr(envs.OverlayImages, "sample_on", sample_on)
    monkeypatch.setattr(module, "update", update)
    soda = ["--soda-batch-size", "6"] if algorithm == "soda" else []
    flags = ["--network", "2x8", "--batch-size", "4", "--warmup", "1", "--steps", "2", "--threads", "1", *soda]
    monkeypatch.setattr(sys, "argv", ["update_speed.py", "--algorithm", algorithm, *flags])
    update_speed.main()
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"{algorithm} update ms/step: ")
    frames = (4, 9, 100, 100) if algorithm in ("rad", "soda") else (4, 9, 84, 84)  # RAD's and SODA's: cropped in update
    assert [(step, shape) for step, shape, _ in calls] == [(0, frames), (1, frames), (2, frames)]
    extra = {
        "svea": [[(4, 3, 84, 84)]] * 3,  # overlay images every step
        "sgqn": [[(4, 3, 84, 84)], [None], [(4, 3, 84, 84)]],  # on its attribution (aux) steps
        "soda": [[(6, 9, 100, 100), (6, 3, 84, 84)], [None, None], [(6, 9, 100, 100), (6, 3, 84, 84)]],  # its own batch
        "rad": [[]] * 3,
    }[algorithm]
    assert [x for _, _, x in calls] == extra
    assert reads_at_draws == [500] * sum(x not in ([], [None], [None, None]) for x in extra)


def test_encoder_floor_counts_the_flops_of_the_paper_stack():
    out = subprocess.run(
        [sys.executable, "benchmarks/encoder_floor.py", "--batch-size", "2", "--repeats", "1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # 11 convs x 32 filters at 84x84: 41^2 x 32 x 9 x 9 + sum over 39, 37, ..., 21 of h^2 x 32 x 9 x 32 multiply-adds.
    macs = 41**2 * 32 * 81 + sum(h * h for h in range(21, 40, 2)) * 32 * 288
    assert f"{2 * macs * 2 / 1e9:.1f} GFLOP per forward pass" in out
    floors = [float(x) for x in re.findall(r"floor of our SAC step .*?(\d+) ms", out)]
    originals = [float(x) for x in re.findall(r"floor of the original's SAC step .*?(\d+) ms", out)]
    assert len(floors) == len(originals) == 2 and all(o >= f > 0 for f, o in zip(floors, originals))


def test_overlay_speed_times_each_source_and_phase():
    out = subprocess.run(
        [
            sys.executable,
            "benchmarks/overlay_speed.py",
            "--files",
            "40",
            "--batches",
            "2",
            "--batch-size",
            "8",
            "--image-size",
            "16",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = {m[0].strip(): float(m[1]) for m in re.findall(r"^(\S.*?)\s+(\d+\.\d)\s+\d+\.\d+%$", out, re.M)}
    assert set(rows) == {
        "procedural (500), first pass",
        "procedural, steady state (crops, flips)",
        "folder (40 files, pool 40), first pass",
        "folder, steady state (0 reads/batch)",
    }, out
    assert all(ms > 0 for ms in rows.values())
    assert re.findall(r"pool: (\d+) MB", out) == ["1", "0"]  # 500 and 40 images of 24 x 24 x 3 bytes


def test_learning_benchmark_trains_the_preset_prints_its_table_and_resumes(tmp_path):
    """benchmarks/learning.py on the real cartpole, too short to update (100 agent steps): the
    run uses the preset, its table is read back from evaluations.csv, and a larger --frames
    extends the same run instead of starting again."""

    def run(frames, *flags):
        env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "OMP_NUM_THREADS": "1"}
        return subprocess.run(
            [
                sys.executable,
                os.path.join(ROOT, "benchmarks/learning.py"),
                "--env-id",
                "cartpole-balance",
                "--frames",
                str(frames),
                "--eval-every",
                "400",
                "--eval-episodes",
                "1",
                *flags,
            ],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    out = run(800)
    assert "networks: 4 convs x 16 filters, projection 50, hidden 1024" in out
    assert "--batch-size 128 --augmentation shift --shift-copies 2 --bf16" in out  # DrQ as its paper, in bf16
    rows = re.findall(r"^\s+(\d+)\s+(\d+\.\d) \+-\s+0\.0$", out, re.M)
    assert [int(frames) for frames, _ in rows] == [400, 800]
    assert re.search(rf"^learned: (yes|no) \(train return {rows[-1][1]} at 800 frames; threshold 500\)$", out, re.M)
    out = run(1200)
    assert "resumed at step 100" in out
    assert [int(f) for f, _ in re.findall(r"^\s+(\d+)\s+(\d+\.\d) \+-\s+0\.0$", out, re.M)] == [400, 800, 1200]
    # The paper's depth (the cartpole-balance study's networks), SGQN, in a run folder of its own.
    out = run(400, "--algorithm", "sgqn", "--network", "11x16")
    assert "networks: 11 convs x 16 filters, projection 100, hidden 1024" in out
    assert os.path.exists(tmp_path / "runs" / "learning" / "cartpole-balance__sgqn-11x16__1" / "evaluations.csv")


def load_benchmark(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "benchmarks", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_representation_readout_reads_what_the_features_hold():
    """The probe's R^2: near 1 for a target the features hold (through a nonlinearity, as a pole
    angle is held), near 0 for one they do not."""
    probe = load_benchmark("representation_probe")
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2000, 8))
    targets = np.stack([np.tanh(features[:, 0]) * features[:, 1], features[:, 2], rng.normal(size=2000)], axis=1)
    r2 = probe.readout_r2(features, targets, steps=1500)
    assert r2.shape == (3,)
    assert r2[0] > 0.85 and r2[1] > 0.95, r2
    assert abs(r2[2]) < 0.15, r2


@pytest.mark.parametrize(
    "script, changes, frame_size",
    [
        ("sac_baseline", {}, 84),
        ("soda", {"soda_batch_size": 8}, 100),  # RAD's frames, 16 px larger: the critic sees their centre
    ],
)
def test_representation_probe_reads_a_real_checkpoint(tmp_path, script, changes, frame_size):
    """End to end on a real cartpole checkpoint of a tiny run: the checkpoint's own networks on frames
    rendered as its run rendered them, one row per state dimension of the task, R^2 at most 1; a file
    that is not a checkpoint is a one-line error."""
    module = importlib.import_module(script)
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "OMP_NUM_THREADS": "1"}
    args = module.Args(
        env_id="cartpole-balance",
        total_timesteps=20,
        learning_starts=10,
        eval_freq=20,
        eval_episodes=1,
        eval_modes=("train",),
        num_conv_layers=2,
        num_filters=8,
        projection_dim=16,
        hidden_dim=32,
        batch_size=8,
        buffer_size=100,
        runs_dir=str(tmp_path / "runs"),
        run_name="probe_me",
        **changes,
    )
    checkpoint = os.path.join(module.main(args), "checkpoint.pt")
    out = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks/representation_probe.py"),
            checkpoint,
            "--frames",
            "400",
            "--readout-steps",
            "50",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    stacks = f"50 random-action stacks ({frame_size} px frames)"
    assert f"{script} checkpoint at step 20 (160 frames), cartpole-balance; {stacks}" in out, out
    rows = re.findall(r"^(\S+)\s+(-?\d+\.\d\d)\s+(-?\d+\.\d\d)$", out, re.M)
    assert [name for name, _, _ in rows] == ["position[0]", "position[1]", "position[2]", "velocity[0]", "velocity[1]"]
    assert all(float(a) <= 1 and float(b) <= 1 for _, a, b in rows)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    err = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks/representation_probe.py"), str(bad)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert err.returncode == 1 and err.stderr.count("\n") == 1 and "cannot read checkpoint" in err.stderr, err.stderr


def test_gpu_check_dry_run_fills_its_table_on_the_cpu(tmp_path):
    """benchmarks/gpu_check.py --dry-run (what a lent GPU runs, at tiny sizes on the CPU, so that the command
    cannot rot): every check ok, a time for every configuration but --compile, the loop's figures and the
    projection; the table written to --out is the one printed."""
    out_file = tmp_path / "gpu_check.md"
    env = dict(os.environ, MUJOCO_GL="egl")
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--threads", "1", "--out", str(out_file)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = dict(re.findall(r"^\| (.+?) \| (.+?) \|$", result.stdout, re.M))
    methods = ("sac", "rad", "soda", "svea", "sgqn", "drq")
    checks = [f"update {m}" for m in methods]
    checks += ["svea: train", "soda: train"]
    checks += [f"sgqn: {c}" for c in ("train", "resume", "eval-checkpoint", "saliency figure")]
    assert all(rows[name].startswith("ok") for name in checks), rows
    times = {k: v for k, v in rows.items() if k.split()[0] in methods}  # not "svea: train"
    assert len(times) == 2 * len(methods) + 6 and all(
        re.fullmatch(r"[\d.]+ ms", v) or (" --compile" in k and v.startswith("skipped")) for k, v in times.items()
    ), times
    assert float(rows["steps per second (one update per step)"]) > 0
    assert re.fullmatch(r"[\d.]+ h", rows["projected: 500k steps + 51 evaluations"])
    table_lines = lambda text: [line for line in text.splitlines() if line.startswith(("|", "#"))]  # noqa: E731
    assert table_lines(out_file.read_text()) == table_lines(result.stdout)
