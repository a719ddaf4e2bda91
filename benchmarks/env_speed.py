"""Env steps per second for each mode (random actions), and the procedural background cost.

    python benchmarks/env_speed.py --env-id cheetah-run --steps 200 --repeats 5

Each repeat times `--steps` steps of every mode's env, taking turns step by step (resets at
episode ends are not timed); the median over repeats is reported with its ratio to train.
Default: every mode (`envs.ALL_MODES`); the overlay images are timed by overlay_speed.py.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import envs  # noqa: E402
from envs.backgrounds import procedural_frame, procedural_params  # noqa: E402


def time_steps(made, steps, rng):
    """Seconds spent stepping each env for `steps` steps. The envs take turns step by step, so
    that load from other processes (noisy on a shared CPU) hits every mode alike."""
    spent = dict.fromkeys(made, 0.0)
    for env in made.values():
        env.reset()
    for _ in range(steps):
        action = rng.uniform(-1, 1, next(iter(made.values())).action_space.shape)
        for mode, env in made.items():
            t = time.perf_counter()
            _, _, terminated, truncated, _ = env.step(action)
            spent[mode] += time.perf_counter() - t
            if terminated or truncated:
                env.reset()  # not timed
    return spent


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env-id", default="cheetah-run")
    parser.add_argument("--steps", type=int, default=200, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--modes", nargs="+", default=list(envs.ALL_MODES), choices=envs.ALL_MODES)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    made = {mode: envs.make_env(args.env_id, seed=0, mode=mode) for mode in args.modes}
    runs = {mode: [] for mode in args.modes}
    for _ in range(args.repeats):
        for mode, seconds in time_steps(made, args.steps, rng).items():
            runs[mode].append(args.steps / seconds)
    base = statistics.median(runs["train"]) if "train" in runs else None
    print(f"{args.env_id}, MUJOCO_GL={os.environ['MUJOCO_GL']}, {args.steps} steps x {args.repeats} repeats")
    print(f"{'mode':<22}{'steps/s':>10}{'ms/step':>10}{'vs train':>10}")
    for mode, values in runs.items():
        sps = statistics.median(values)
        ratio = f"{sps / base:.2f}x" if base else "-"
        print(f"{mode:<22}{sps:>10.1f}{1000 / sps:>10.2f}{ratio:>10}")

    for hard in (False, True):
        p = procedural_params(np.random.default_rng(0), 84, hard=hard)
        procedural_frame(p, 0)
        t = time.perf_counter()
        for i in range(500):
            procedural_frame(p, i)
        print(
            f"procedural {'hard' if hard else 'easy'} background frame (84 px): "
            f"{(time.perf_counter() - t) / 500 * 1000:.3f} ms"
        )


if __name__ == "__main__":
    main()
