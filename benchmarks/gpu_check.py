"""One prepared command for a lent GPU: does the project run right on CUDA, and how fast (issue 48).

    # on a machine with network access, once: what the GPU machine lacks, into one folder
    python benchmarks/gpu_check.py --prepare gpu_wheels          # py3.12 wheels + Debian's EGL packages
    # on the GPU machine (no network; torch already installed), about 8 minutes on an H100:
    python benchmarks/gpu_check.py --install gpu_wheels --original-src SGQN/DMC/src --out gpu_check.md
    # anywhere, on the CPU, at tiny sizes, in about a minute (CI runs it, so that it cannot rot):
    python benchmarks/gpu_check.py --dry-run

It prints one table, and writes it to --out (markdown), in three parts:

1. checks on the device, each ok or the error's first line:
   - each method's update (sac, rad, soda, svea, sgqn, drq) on a batch from the replay buffer, an odd
     (critic) and an even (full; SODA's auxiliary step too) step, under `torch.cuda.set_sync_debug_mode("error")`:
     a host sync raises;
   - a short run of each script on cartpole-balance at tiny sizes (train, evaluate with the saliency
     measure, checkpoint), `--resume` to a later step, `--eval-checkpoint`, and `saliency_figure.py`
     on its checkpoint; each a subprocess, as a user runs it (the dry run: SVEA's and SODA's training only);
2. ms per update at the paper's size (11 x 32, projection 100, hidden 1024, batch 128), fp32, by
   benchmarks/update_speed.py: each method with --torch-deterministic (the default) and without
   (cudnn.benchmark), and SAC and SGQN with --tf32, --bf16 and --compile; with --original-src, the
   original code's SAC and SGSAC on the same GPU (benchmarks/against_original.py --time --device cuda);
3. the real loop, `sgqn.py --env-id cheetah-run` at the paper's size (benchmarks/loop_speed.py's
   timers, synchronised on the GPU): agent steps per second once one update follows each step, the
   shares of update, env and the rest, the first updates' burst, one evaluation on the five DMC-GB
   modes (2 episodes, counted as the scripts' 10), and the projected hours of the paper's 500k steps
   with its 51 evaluations (every 10k steps and at step 0).

Each part's table is printed (and written to --out) as soon as it is done, and a part that fails
or hangs becomes a FAILED row: one problem does not lose the session's other figures. Exit status
1 if any row failed.

--dry-run does all of it on the CPU at tiny sizes (2 convs x 8 filters, 32 pixels, batch 16; no
compile, no original), where there is no sync debug mode: a pass there says the script runs, not
that the GPU paths are right.
"""

import argparse
import glob
import importlib
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = [  # what the GPU machine's image lacks (it has torch): requirements.txt's pins
    "mujoco==3.17.0", "dm_control==1.0.50", "gymnasium==1.4.0", "tyro==1.0.17", "tensorboard==2.21.0",
    "imageio[ffmpeg]==2.38.1", "pillow", "matplotlib==3.11.2",
]  # fmt: skip
EGL_DEBS = ["libegl1", "libgl1-mesa-dri", "libglvnd0", "libegl-mesa0"]
TINY = ["--num-conv-layers", "2", "--num-filters", "8", "--projection-dim", "16", "--hidden-dim", "32"]
TINY += ["--image-size", "32", "--batch-size", "16"]
# Each method's script and flags: the paper's columns (SAC, RAD, SODA, SVEA, SGQN), then DrQ beside them.
METHODS = {
    "sac": ("sac_baseline.py", ["--augmentation", "none"]),
    "rad": ("sac_baseline.py", ["--augmentation", "crop"]),
    "soda": ("soda.py", []),
    "svea": ("sac_baseline.py", ["--augmentation", "svea"]),
    "sgqn": ("sgqn.py", []),
    "drq": ("sac_baseline.py", ["--augmentation", "shift"]),
}


def prepare(folder):
    """Download (this machine needs the network) the wheels for Python 3.12 on x86_64 and the EGL .debs."""
    os.makedirs(folder, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--dest", folder, "--only-binary=:all:", "--python-version", "3.12"]
    pip += ["--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64", "--platform", "any"]
    subprocess.run(pip + PACKAGES, check=True)
    subprocess.run(["apt-get", "download", *EGL_DEBS], cwd=folder, check=True)
    print(f"prepared {folder}: {len(os.listdir(folder))} files")


def install(folder):
    """Install the prepared folder without the network; torch is the machine's own."""
    if not os.path.isdir(folder):
        raise SystemExit(f"error: --install {folder}: no such folder (make it with --prepare)")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", folder, *PACKAGES], check=True)
    debs = glob.glob(os.path.join(folder, "*.deb"))
    if debs:  # best effort: a GPU image usually has EGL from its driver; the .debs come without their dependencies
        result = subprocess.run(["dpkg", "-i", *debs], capture_output=True, text=True)
        if result.returncode:
            print(f"note: dpkg -i of the EGL packages failed ({first_line(result.stderr)}); going on with the image's EGL")


def first_line(text):
    lines = [line for line in text.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("error:", "RuntimeError", "Error", "AssertionError"))]
    return (errors or lines or ["(no output)"])[-1][:160]


def run(command, env, timeout=300):
    """A subprocess in the repository: (ok, its output); one that runs past `timeout` seconds is a failure."""
    try:
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"error: timed out after {timeout} s: {' '.join(command[1:3])}"
    return result.returncode == 0, result.stdout + result.stderr


# ----------------------------------------------------------------------------- 1. checks
def check_updates(device_name, dry_run):
    """{method: "ok" or the error}: two updates of each method on a replay-buffer batch, host syncs raising."""
    import torch

    sys.path.insert(0, ROOT)
    import envs
    import run_plumbing

    device = torch.device(device_name)
    results = {}
    overlay = envs.OverlayImages(None, 32 if dry_run else 84, 0)  # one pool for all methods (500 images to make)
    for method, (script, flags) in METHODS.items():
        module = importlib.import_module(script.removesuffix(".py"))
        changes = {"augmentation": flags[1]} if flags else {}
        changes |= {"sgqn_quantile": 0.95} if method == "sgqn" else {}  # main() sets it from the task
        if dry_run:
            changes |= dict(num_conv_layers=2, num_filters=8, projection_dim=16, hidden_dim=32, image_size=32, batch_size=16)
            changes |= {"soda_batch_size": 32} if method == "soda" else {}
        args = module.Args(cuda=True, **changes)
        try:
            run_plumbing.cuda_settings(args)
            obs_shape = (9, args.image_size, args.image_size)
            agent = module.make_agent(obs_shape, 6, args, device)
            frame_size = run_plumbing.render_size(args)  # RAD's and SODA's frames are 16 px larger, cropped in the update
            buffer = module.ReplayBuffer(600, (3, frame_size, frame_size), 6, 3, device, seed=0)
            rng = torch.Generator().manual_seed(0)
            buffer.add_first(torch.randint(0, 256, (3, frame_size, frame_size), generator=rng, dtype=torch.uint8).numpy())
            for _ in range(500):
                frame = torch.randint(0, 256, (3, frame_size, frame_size), generator=rng, dtype=torch.uint8)
                buffer.add(frame.numpy(), torch.rand(6, generator=rng).numpy() * 2 - 1, 0.5, False)
            for step in (1, 2):
                batch = buffer.sample(args.batch_size)
                # As main() makes them: SVEA's and SGQN's overlays each step; on SODA's auxiliary steps (every 2nd), its
                # own batch of uncropped frames and their overlays.
                aux_step = method == "soda" and step % args.aux_update_freq == 0
                if aux_step:
                    extra = [buffer.sample(args.soda_batch_size)[0], overlay.sample_on(args.soda_batch_size, device)]
                else:
                    extra = [overlay.sample_on(args.batch_size, device)] if method in ("svea", "sgqn") else []
                if device.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.set_sync_debug_mode("error")
                try:
                    metrics = module.update(agent, batch, step, args, -6.0, *extra)
                finally:
                    if device.type == "cuda":
                        torch.cuda.set_sync_debug_mode("default")
                if not all(torch.isfinite(v).all() for v in metrics.values()):
                    raise RuntimeError(f"step {step}: a loss is not finite")
                if method == "soda" and ("losses/soda_loss" in metrics) != aux_step:
                    raise RuntimeError(f"step {step}: SODA's loss {'missing' if aux_step else 'on a step without its update'}")
            results[f"update {method}"] = "ok" + ("" if device.type == "cuda" else " (CPU: no sync debug mode)")
        except Exception as e:  # a check that fails is a row of the table, not the end of the check
            results[f"update {method}"] = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:140]}"
            traceback.print_exc()
    return results


def check_runs(env, dry_run, scratch):
    """{check: "ok" or the error}: each script trained, resumed, evaluated from its checkpoint, and its saliency figure."""
    results = {}
    cuda = ["--no-cuda"] if dry_run else []
    modes = ["train"] if dry_run else ["train", "video_hard"]  # each mode an evaluation worker: seconds to start
    for method in ("svea", "soda", "sgqn"):  # each script (SODA's also renders the larger frames RAD crops)
        script, flags = METHODS[method]
        runs = os.path.join(scratch, "runs")
        common = ["--env-id", "cartpole-balance", "--learning-starts", "20", "--eval-episodes", "1", *TINY, *cuda]
        common += ["--eval-modes", *modes, "--runs-dir", runs, "--run-name", method, "--save-freq", "30"]
        checkpoint = os.path.join(runs, method, "checkpoint.pt")
        steps = [
            ("train", [sys.executable, script, *common, *flags, "--total-timesteps", "30", "--eval-freq", "30"]),
            ("resume", [sys.executable, script, "--resume", checkpoint, "--total-timesteps", "60"]),
            ("eval-checkpoint", [sys.executable, script, "--eval-checkpoint", checkpoint, "--eval-modes", *modes]),
            ("saliency figure", [sys.executable, "experiments/saliency_figure.py", checkpoint, "--modes", *modes]),
        ]
        if dry_run and method != "sgqn":  # the dry run's minute: SVEA's and SODA's runs only train
            steps = steps[:1]
        for name, command in steps:
            ok, output = run(command, env)
            results[f"{method}: {name}"] = "ok" if ok else f"FAILED: {first_line(output)}"
            if not ok:
                print(output[-3000:], file=sys.stderr)
                break
    return results


# ----------------------------------------------------------------------------- 2. update times
def update_times(env, dry_run, original_src):
    """{configuration: ms per update or the error}: update_speed.py's main() in this process, one configuration
    after another (each sets its threads, seed and cudnn settings itself)."""
    import contextlib
    import io

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import update_speed

    def measure(flags):
        output = io.StringIO()
        try:
            with contextlib.redirect_stdout(output), mock_argv(["update_speed.py", *flags]):
                update_speed.main()
        except (Exception, SystemExit) as e:
            return False, output.getvalue() + f"\n{type(e).__name__}: {e}"
        return True, output.getvalue()

    configs = [(m, []) for m in METHODS] + [(m, ["--no-torch-deterministic"]) for m in METHODS]
    configs += [(m, [flag]) for m in ("sac", "sgqn") for flag in ("--tf32", "--bf16", "--compile")]
    size = ["--network", "2x8", "--batch-size", "16", "--steps", "2", "--warmup", "1"] if dry_run else ["--steps", "20"]
    device = ["--device", "cpu", "--threads", "2"] if dry_run else ["--device", "cuda", "--warmup", "5"]
    rows = {}
    for method, flags in configs:
        name = f"{method} {' '.join(flags) or '(defaults: deterministic, fp32)'}"
        if dry_run and "--compile" in flags:
            rows[name] = "skipped (dry run: compiling takes minutes on a CPU)"
            continue
        ok, output = measure(["--algorithm", method, *device, *size, *flags])
        found = re.search(r"update ms/step: ([\d.]+)", output)
        rows[name] = f"{float(found.group(1)):.1f} ms" if ok and found else f"FAILED: {first_line(output)}"
    if original_src and not dry_run:
        command = [sys.executable, "benchmarks/against_original.py", "--src", original_src, "--time", "--device", "cuda"]
        ok, output = run(command, env)
        for method in ("SAC", "SGQN", "SVEA"):
            found = re.search(rf"{method}: original (\d+) ms, ours (\d+) ms", output)
            rows[f"original {method} (against_original.py --time --device cuda)"] = (
                f"original {found.group(1)} ms, ours {found.group(2)} ms" if ok and found else f"FAILED: {first_line(output)}"
            )
    else:
        rows["original SAC and SGSAC"] = "not measured: " + ("dry run" if dry_run else "no --original-src")
    return rows


# ----------------------------------------------------------------------------- 3. the real loop
def loop(dry_run, threads):
    """{figure: value} of the real loop of sgqn.py on cheetah-run (loop_speed.run), with the 500k-step projection."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import loop_speed

    import envs

    if dry_run:
        r = loop_speed.run("sgqn", "small", "cartpole-balance", threads, steps=(10, 40), eval_episodes=1, image_size=32,
                           num_conv_layers=2, num_filters=8, projection_dim=16, hidden_dim=32, batch_size=16)  # fmt: skip
    else:  # the paper's size; 1000 random steps and its burst as the script makes them, then 1500 steady steps
        r = loop_speed.run("sgqn", "paper", "cheetah-run", threads, cuda=True, steps=(1000, 2500),
                           eval_modes=envs.MODES, eval_episodes=2)  # fmt: skip
    one_eval = r["eval_s"] / max(r["evaluations"], 1)
    full_eval = one_eval * (10 / 2 if not dry_run else 1)  # the scripts evaluate 10 episodes per mode
    hours = (500_000 / r["sps"] + 51 * full_eval) / 3600
    shares = r["shares"]
    return {
        "configuration": "tiny, cartpole-balance, CPU" if dry_run else "paper size, cheetah-run, fp32, deterministic",
        "steps per second (one update per step)": f"{r['sps']:.1f}",
        "ms per update in the loop": f"{r['update_ms']:.1f}",
        "shares: update / env / act / sample / other": " / ".join(
            f"{100 * shares[k]:.0f}%" for k in ("update", "env", "act", "sample", "other")
        ),
        "first updates' burst": f"{r['burst_n']} updates in {r['burst_s']:.1f} s",
        "one evaluation, 5 modes x 10 episodes": f"{full_eval:.0f} s" + (" (dry run: 1 mode x 1 episode)" if dry_run else ""),
        "projected: 500k steps + 51 evaluations": f"{hours:.1f} h",
    }


def mock_argv(argv):
    from unittest import mock

    return mock.patch.object(sys, "argv", argv)


def table(parts):
    lines = []
    for title, rows in parts:
        lines += [f"\n### {title}\n", "| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows.items()]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="on the CPU at tiny sizes, in about a minute")
    p.add_argument("--prepare", metavar="FOLDER", help="download the wheels and EGL packages into FOLDER, then stop")
    p.add_argument("--install", metavar="FOLDER", help="install them from FOLDER first (no network)")
    p.add_argument("--original-src", help="SuReLI/SGQN's DMC/src, to time the original's update on the same GPU")
    p.add_argument("--out", help="also write the table to this markdown file")
    p.add_argument("--threads", type=int, default=2, help="torch's CPU threads (the env and the dry run)")
    opts = p.parse_args()
    if opts.prepare:
        return prepare(opts.prepare)
    if opts.install:
        install(opts.install)
    if opts.original_src and not os.path.isdir(opts.original_src):
        raise SystemExit(f"error: --original-src {opts.original_src}: no such folder")
    import torch

    if not opts.dry_run and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device here; --dry-run checks the command on the CPU")
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), OMP_NUM_THREADS=str(opts.threads))
    os.environ.update(MUJOCO_GL=env["MUJOCO_GL"])
    started = time.time()
    device = "cpu" if opts.dry_run else "cuda"
    on = "CPU (dry run)" if opts.dry_run else torch.cuda.get_device_name(0)
    head = f"## gpu_check.py on {on}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}\n"
    print(head, flush=True)
    text, failed = head, []
    with tempfile.TemporaryDirectory() as scratch:
        parts = (
            (f"1. checks on {on}", lambda: check_updates(device, opts.dry_run) | check_runs(env, opts.dry_run, scratch)),
            (f"2. ms per update ({'tiny' if opts.dry_run else 'paper size, batch 128'})", lambda: update_times(env, opts.dry_run, opts.original_src)),
            ("3. the real loop of sgqn.py", lambda: loop(opts.dry_run, opts.threads)),
        )  # fmt: skip
        for title, part in parts:
            try:
                rows = part()
            except Exception as e:  # the part's row says what broke; the other parts still run
                traceback.print_exc()
                rows = {"the whole part": f"FAILED: {type(e).__name__}: {str(e).splitlines()[0][:140] if str(e) else ''}"}
            part_text = table([(title, rows)])
            print(part_text, flush=True)
            text += part_text
            failed += [k for k, v in rows.items() if str(v).startswith("FAILED")]
            if opts.out:
                with open(opts.out, "w") as f:
                    f.write(text)
    tail = f"\n{time.time() - started:.0f} s in all; {len(failed)} failed\n"
    print(tail)
    if opts.out:
        with open(opts.out, "w") as f:
            f.write(text + tail)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
