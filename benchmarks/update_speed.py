"""Milliseconds per training update of the paper-size agent, split by phase (no env, no loop).

    python benchmarks/update_speed.py --algorithm sgqn
    python benchmarks/update_speed.py --algorithm sac --steps 10 --threads 2
    python benchmarks/update_speed.py --algorithm sgqn --bf16 --compile --warmup 3
    python benchmarks/update_speed.py --algorithm sac --no-channels-last --default-allocator
    python benchmarks/update_speed.py --algorithm sgqn --learning-preset     # the networks of benchmarks/learning.py
    python benchmarks/update_speed.py --algorithm sac --learning-preset --shift-copies 2   # DrQ's K = M = 2
    python benchmarks/update_speed.py --algorithm svea --network 11x16 --threads 1   # SVEA at the balance study's size
    python benchmarks/update_speed.py --algorithm soda --device cuda

Imports `sac_baseline`, `sgqn` or `soda` (never copies their code), builds the full-size agent from
the script's own `Args` defaults with walker-walk shapes (obs 9x84x84, 6 actions; SGQN quantile
0.95), fills the script's `ReplayBuffer` with random frames (rendered 100 px for RAD's and SODA's
random 84-px crops), and calls the script's `update` over steps 0, 1, 2, ... (`--warmup` untimed,
then `--steps` timed). Even steps run critic + actor/alpha + target (+ SGQN's or SODA's aux); odd
steps run the critic only. A step is buffer.sample (+ the overlay images on SGQN aux steps and on
every SVEA step; on SODA's aux steps, its own batch of `--soda-batch-size` uncropped frames and
their overlay images: as `main` builds them) + update. The overlay pool (`envs.OverlayImages`, 500
procedural images) is filled before the first step: the scripts make it once per run, when first
drawn. `--algorithm` svea, drq and rad are sac_baseline.py with `--augmentation` svea, shift and
crop.

Phases are timed by wrapping the module's functions, which `update` looks up as globals at call
time: sample, overlay, critic, actor, target, aux (SGQN's update_aux, SODA's update_soda); "other"
is the rest of the step (random shift or crop, glue). "attribution" (guided_backprop +
saliency_mask) runs INSIDE critic and aux and is already counted there; it is shown on its own line
for information only.

run_plumbing.keep_freed_memory() is called first, as main() does (--default-allocator skips
it, to measure what it saves). Speed flags (--no-channels-last, --bf16, --compile) are passed to
the script's Args; a script without those fields makes the benchmark say so and exit with status
2. Medians are reported (the
machine is shared); the last line is `<algorithm> update ms/step: X`, X = mean of the median
odd-step and median even-step totals. That mean is the cost per agent step once one update follows
each step; the scripts' burst of first updates (as many as learning_starts, all made at the agent
step learning_starts, as in DMC-GB's and the original SGQN's loop) costs the even-step total per update.
"""

import argparse
import dataclasses
import importlib
import os
import statistics
import sys
import time
from collections import defaultdict

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import envs  # noqa: E402
import run_plumbing  # noqa: E402

# The original code (before any speed work) on the 2-core dev machine: fp32, 2 threads, batch 128.
ORIGINAL_MS = {"sgqn": 3980.0, "sac": 754.0}
OBS_SHAPE, ACTION_DIM = (9, 84, 84), 6  # walker-walk, frame stack 3
TOP_LEVEL = ("sample", "overlay", "critic", "actor", "target", "aux")


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algorithm", choices=("sac", "drq", "rad", "svea", "soda", "sgqn"), required=True)
    p.add_argument("--network", help="CONVSxFILTERS, e.g. 11x16 (the balance study's); default the paper's 11x32")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--soda-batch-size", type=int, help="SODA's own batch on its aux steps (default: soda.py's, 256)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2, help="untimed updates first (steps 0..warmup-1)")
    p.add_argument("--steps", type=int, default=6, help="timed updates (K)")
    p.add_argument("--no-channels-last", action="store_true", help="NCHW convs (the scripts' default is channels-last)")
    p.add_argument("--bf16", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--tf32", action="store_true", help="TF32 convs and matmuls on the GPU (the scripts' --tf32)")
    p.add_argument(
        "--no-torch-deterministic",
        action="store_true",
        help="cudnn.benchmark instead of deterministic algorithms (the scripts' --no-torch-deterministic)",
    )
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--learning-preset",
        action="store_true",
        help="the networks of benchmarks/learning.py's PRESET (4 convs x 16, projection 50, hidden 1024) instead of the paper's",
    )
    p.add_argument(
        "--shift-copies",
        type=int,
        help="DrQ's K = M: copies of each transition, each shifted on its own; also sets --augmentation shift (sac's default is none; not rad or soda: they crop)",
    )
    p.add_argument(
        "--default-allocator",
        action="store_true",
        help="skip run_plumbing.keep_freed_memory() (glibc's defaults: freed activations go back to the OS)",
    )
    return p.parse_args()


class PhaseTimer:
    """Wraps functions so that each call adds its wall time to `self.current[phase]`."""

    def __init__(self, device):
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.current = defaultdict(float)
        self.patched = []  # (module, name, original): put back by restore()

    def wrap(self, fn, phase):
        def timed(*a, **kw):
            self.sync()
            t = time.perf_counter()
            out = fn(*a, **kw)
            self.sync()
            self.current[phase] += time.perf_counter() - t
            return out

        return timed

    def patch(self, module, name, phase):
        self.patched.append((module, name, getattr(module, name)))
        setattr(module, name, self.wrap(getattr(module, name), phase))

    def restore(self):
        """The module functions as they were (a caller may run main() again in the same process)."""
        for module, name, original in reversed(self.patched):
            setattr(module, name, original)
        self.patched.clear()


def filled_buffer(module, device, frame_size, frames=2000, episode_length=500, seed=0):
    rng = np.random.default_rng(seed)
    buffer = module.ReplayBuffer(frames, (3, frame_size, frame_size), ACTION_DIM, OBS_SHAPE[0] // 3, device, seed)
    images = rng.integers(0, 256, (frames, 3, frame_size, frame_size), dtype=np.uint8)
    for i, frame in enumerate(images):
        if i % episode_length == 0:
            buffer.add_first(frame)
        else:
            buffer.add(frame, rng.uniform(-1, 1, ACTION_DIM).astype(np.float32), float(rng.uniform()), False)
    return buffer


def main():
    opts = parse_args()
    if opts.shift_copies and opts.algorithm in ("rad", "soda"):
        print(f"--shift-copies: {opts.algorithm} crops its frames, it shifts no copies")
        sys.exit(2)
    if opts.soda_batch_size and opts.algorithm != "soda":
        print(f"--soda-batch-size: {opts.algorithm} has no SODA batch")
        sys.exit(2)
    module = importlib.import_module(opts.algorithm if opts.algorithm in ("sgqn", "soda") else "sac_baseline")
    fields = {f.name for f in dataclasses.fields(module.Args)}
    speed = {"channels_last": not opts.no_channels_last, "bf16": opts.bf16, "compile": opts.compile}
    for name in speed:
        if name not in fields:
            print(f"flag --{name.replace('_', '-')} not supported by {module.__name__}.py yet (no Args.{name})")
            sys.exit(2)
    kept = False if opts.default_allocator else run_plumbing.keep_freed_memory()  # as main() does
    device = torch.device(opts.device)
    torch.set_num_threads(opts.threads)
    torch.manual_seed(0)

    extra = {"sgqn_quantile": 0.95} if opts.algorithm == "sgqn" else {}
    if opts.learning_preset:
        from learning import PRESET

        extra |= {k: v for k, v in PRESET.items() if k != "batch_size"}
    if opts.algorithm in ("drq", "rad", "svea"):
        extra |= {"augmentation": {"drq": "shift", "rad": "crop", "svea": "svea"}[opts.algorithm]}
    if opts.network:
        convs, filters = map(int, opts.network.lower().split("x"))
        extra |= {"num_conv_layers": convs, "num_filters": filters}
    if opts.shift_copies:
        extra |= {"shift_copies": opts.shift_copies, "augmentation": extra.get("augmentation", "shift")}
    if opts.soda_batch_size:
        extra |= {"soda_batch_size": opts.soda_batch_size}
    extra |= {"tf32": opts.tf32, "torch_deterministic": not opts.no_torch_deterministic}
    args = module.Args(batch_size=opts.batch_size, cuda=device.type == "cuda", **speed, **extra)
    run_plumbing.cuda_settings(args)  # as main() sets them
    agent = module.make_agent(OBS_SHAPE, ACTION_DIM, args, device)
    frame_size = run_plumbing.render_size(args)  # RAD's and SODA's frames are 16 px larger, cropped in the update
    buffer = filled_buffer(module, device, frame_size)
    aux_freq = getattr(args, "aux_update_freq", 0)
    svea, soda = args.augmentation == "svea", module.__name__ == "soda"
    overlay = envs.OverlayImages(None, args.image_size, 0) if aux_freq or svea else None
    if overlay:
        overlay.fill()  # its 500 images made now, not in the first timed draws (main() makes them once per run)
    target_entropy = -float(ACTION_DIM)

    timer = PhaseTimer(device)
    for name, phase in (
        ("update_critic", "critic"),
        ("update_actor_and_alpha", "actor"),
        ("update_target", "target"),
        ("update_aux", "aux"),
        ("update_soda", "aux"),
        ("guided_backprop", "attribution"),
        ("saliency_mask", "attribution"),
    ):
        if hasattr(module, name):
            timer.patch(module, name, phase)
    buffer.sample = timer.wrap(buffer.sample, "sample")
    copies = getattr(args, "shift_copies", 1)  # soda.py has none: it crops
    rows = args.soda_batch_size if soda else args.batch_size * (copies if svea else 1)
    make_overlay = timer.wrap(lambda: overlay.sample_on(rows, device), "overlay")  # as main() makes them

    def one_step(step):
        timer.current = defaultdict(float)
        timer.sync()
        t = time.perf_counter()
        batch = buffer.sample(args.batch_size)
        aux_step = bool(aux_freq) and step % aux_freq == 0
        with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16, cache_enabled=False):  # as main() does
            if soda:  # on aux steps SODA's own batch of uncropped frames and their overlay images, else neither
                soda_obs = buffer.sample(args.soda_batch_size)[0] if aux_step else None
                module.update(agent, batch, step, args, target_entropy, soda_obs, make_overlay() if aux_step else None)
            elif aux_freq or svea:
                images = make_overlay() if svea or aux_step else None
                module.update(agent, batch, step, args, target_entropy, images)
            else:
                module.update(agent, batch, step, args, target_entropy)
        timer.sync()
        phases = dict(timer.current)
        phases["total"] = time.perf_counter() - t
        phases["other"] = phases["total"] - sum(phases.get(k, 0.0) for k in TOP_LEVEL)
        return phases

    flags = " ".join(f"--{k.replace('_', '-')}" for k, v in speed.items() if v) if any(speed.values()) else "fp32, NCHW"
    flags += ", freed memory kept" if kept else ", glibc's default allocator"
    if device.type == "cuda":
        flags += f", {'deterministic' if args.torch_deterministic else 'cudnn.benchmark'}{', TF32' if args.tf32 else ''}"
    augmentation = args.augmentation + (f" x {copies} shifted copies" if copies > 1 else "")
    augmentation += f" of {frame_size}-px frames" if frame_size != args.image_size else ""
    augmentation += f", SODA batch {args.soda_batch_size}" if soda else ""
    print(
        f"{module.__name__}.py update, walker-walk shapes, batch {args.batch_size}, augmentation {augmentation}, "
        f"{args.num_conv_layers} convs x {args.num_filters} filters, hidden {args.hidden_dim}; {flags}; device {device}, "
        f"{opts.threads} threads"
    )
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    runs = {"odd": [], "even": []}
    try:
        t = time.perf_counter()
        for step in range(opts.warmup):
            one_step(step)
        print(f"warmup: {opts.warmup} updates in {time.perf_counter() - t:.1f} s")
        for step in range(opts.warmup, opts.warmup + opts.steps):
            runs["even" if step % 2 == 0 else "odd"].append(one_step(step))
    finally:
        timer.restore()
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    def med(kind, phase):
        values = [r.get(phase, 0.0) for r in runs[kind]]
        return 1000 * statistics.median(values) if values else float("nan")

    print(f"\nmedian ms per phase ({len(runs['odd'])} odd steps, {len(runs['even'])} even steps)")
    print(f"{'phase':<14}{'odd':>10}{'even':>10}")
    phases = [p for p in (*TOP_LEVEL, "other", "attribution") if any(p in r for rs in runs.values() for r in rs)]
    for phase in phases:
        note = "   (inside critic/aux, already counted there)" if phase == "attribution" else ""
        print(f"{phase:<14}{med('odd', phase):>10.1f}{med('even', phase):>10.1f}{note}")
    print(f"{'step total':<14}{med('odd', 'total'):>10.1f}{med('even', 'total'):>10.1f}")
    ms = (med("odd", "total") + med("even", "total")) / 2
    original = ORIGINAL_MS.get(opts.algorithm)
    if original and not opts.network:  # the original's time was measured at the paper's size only
        print(f"ratio ours/original: {ms / original:.2f} (original code: {original:.0f} ms/step, fp32, 2 threads, batch 128)")
    print(f"{opts.algorithm} update ms/step: {ms:.1f}")


if __name__ == "__main__":
    main()
