"""Does it learn? Train the learning preset on a real DeepMind Control task and print the
evaluation return at every evaluation. Not a CI test: one DrQ run of 100k frames on
cartpole-swingup takes 74 minutes on 2 idle CPU cores with bf16 units (SGQN in fp32 about 3 hours; see README
"Learning on DeepMind Control" for what has been measured).

    python benchmarks/learning.py                                    # DrQ (K = M = 2, bf16), cartpole-swingup, 100k frames
    python benchmarks/learning.py --algorithm drq-km1                # DrQ as DMC-GB runs it (K = M = 1, fp32)
    python benchmarks/learning.py --algorithm sgqn
    python benchmarks/learning.py --algorithm drq --env-id cartpole-balance --frames 40000 --seed 2
    # the cartpole-balance study (docs/results/balance): the paper's depth, fp32, K = M = 1
    python benchmarks/learning.py --algorithm sgqn --network 11x16 --env-id cartpole-balance --frames 40000 \
        --eval-every 5000 --eval-episodes 5 --eval-modes train video_hard

It calls the script's own `main(Args(...))` (never a copy of its code) with PRESET below (the
networks of the results study, README "Results so far"; `--network` 11x16 or 11x32 for the paper's
depth, projection 100) and the method's flags, in the run folder
`runs/learning/{env_id}__{algorithm}__{seed}` (`{algorithm}-{network}` for a --network other than 4x16). Re-running the same command resumes that run from
its checkpoint and replay buffer (Ctrl-C is safe), and a larger `--frames` extends it; `--fresh`
starts it again. The table is read back from the run's
`evaluations.csv`: frames, then mean +- std of the deterministic policy's return per mode. The
last line is `learned: yes|no (...)`: yes when the last train-mode evaluation is above
`--threshold` (500: what DrQ reaches on cartpole-swingup by 100k frames, Kostrikov et al. 2021,
report 759 +- 92).
"""

import argparse
import csv
import dataclasses
import importlib
import os
import shutil
import sys
from collections import defaultdict

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# The learning preset: DrQ's encoder depth (4 convs, first stride 2) at half its width, DrQ's
# projection (50) and heads (1024), batch 128, the scripts' defaults for everything else
# (lr 1e-3, initial temperature 0.1, action repeat 8 on cartpole, 1000 random steps).
PRESET = dict(num_conv_layers=4, num_filters=16, projection_dim=50, hidden_dim=1024, batch_size=128)
# --network: the preset's networks (4x16), or those of the cartpole-balance study (docs/results/balance):
# the paper's depth at half its width (11x16), and the paper's own (11x32, what `python sgqn.py` trains).
NETWORKS = {
    "4x16": {},
    "11x16": dict(num_conv_layers=11, num_filters=16, projection_dim=100),
    "11x32": dict(num_conv_layers=11, num_filters=32, projection_dim=100),
}
# What the algorithm names mean: the script and the flags that make the method. `drq` is DrQ as its
# paper (K = M = 2), in bf16 (as fast again on a CPU with bf16 units; bf16 collapses SGQN's encoder,
# so SGQN stays fp32); `drq-km1` is DrQ as DMC-GB and the results study run it (K = M = 1, fp32),
# which passes 500 by 100k frames on cartpole-swingup on one seed of four (README "Learning").
METHODS = {
    "drq": ("sac_baseline", dict(augmentation="shift", shift_copies=2, bf16=True)),
    "drq-km1": ("sac_baseline", dict(augmentation="shift")),
    "sac": ("sac_baseline", dict(augmentation="none")),
    "sgqn": ("sgqn", {}),
}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algorithm", choices=sorted(METHODS), default="drq")
    p.add_argument("--env-id", default="cartpole-swingup")
    p.add_argument(
        "--network", choices=list(NETWORKS), default="4x16", help="convs x filters: the preset's, or the paper's depth (11)"
    )
    p.add_argument("--frames", type=int, default=100_000, help="training frames (agent steps x action repeat)")
    p.add_argument("--eval-every", type=int, default=10_000, help="frames between evaluations")
    p.add_argument("--eval-episodes", type=int, default=10)
    p.add_argument("--eval-modes", nargs="+", default=["train"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threshold", type=float, default=500.0, help="train-mode return that counts as learned")
    p.add_argument("--runs-dir", default=os.path.join("runs", "learning"))
    p.add_argument("--fresh", action="store_true", help="delete the run folder first instead of resuming it")
    return p.parse_args()


def read_evaluations(path):
    """{frames: {mode: [episode returns]}} from a run's evaluations.csv."""
    table = defaultdict(lambda: defaultdict(list))
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            table[int(row["frames"])][row["mode"]].append(float(row["return"]))
    return table


def main():
    cli = parse_args()
    import envs
    import run_plumbing

    script_name, method_flags = METHODS[cli.algorithm]
    script = importlib.import_module(script_name)
    action_repeat = envs.default_action_repeat(cli.env_id)
    steps = cli.frames // action_repeat
    preset = PRESET | NETWORKS[cli.network]
    method = cli.algorithm if cli.network == "4x16" else f"{cli.algorithm}-{cli.network}"
    run_name = f"{cli.env_id}__{method}__{cli.seed}"
    run_dir = os.path.join(cli.runs_dir, run_name)
    if cli.fresh:
        shutil.rmtree(run_dir, ignore_errors=True)
    args = script.Args(
        **preset,
        **method_flags,
        exp_name=method,
        env_id=cli.env_id,
        seed=cli.seed,
        total_timesteps=steps,
        save_buffer=True,
        eval_freq=max(1, cli.eval_every // action_repeat),
        eval_episodes=cli.eval_episodes,
        eval_modes=tuple(cli.eval_modes),
        save_freq=max(1, cli.eval_every // action_repeat),
        run_name=run_name,
        runs_dir=cli.runs_dir,
    )
    checkpoint = os.path.join(run_dir, "checkpoint.pt")
    if os.path.exists(checkpoint):
        args = dataclasses.replace(args, resume=checkpoint)
    print(
        f"{cli.algorithm} ({script_name}.py) on {cli.env_id}, {cli.frames} frames = {steps} agent steps, "
        f"preset {' '.join(run_plumbing.as_flag(k, v) for k, v in (preset | method_flags).items())}",
        flush=True,
    )
    try:
        script.main(args)
    except envs.ConfigError as e:
        sys.exit(f"error: {e}")
    except run_plumbing.Interrupted as e:
        sys.exit(e.exit_code)

    table = read_evaluations(os.path.join(run_dir, "evaluations.csv"))
    print(f"\n{'frames':>8}  " + "  ".join(f"{m:>18}" for m in cli.eval_modes))
    for frames in sorted(table):
        cells = [
            f"{np.mean(r):8.1f} +- {np.std(r):6.1f}" if (r := table[frames].get(m)) else f"{'-':>18}" for m in cli.eval_modes
        ]
        print(f"{frames:>8}  " + "  ".join(cells))
    last = table[max(table)].get("train") if table else None
    if last is None:
        print("learned: unknown (no train-mode evaluation)")
    else:
        verdict = "yes" if np.mean(last) > cli.threshold else "no"
        print(f"learned: {verdict} (train return {np.mean(last):.1f} at {max(table)} frames; threshold {cli.threshold:.0f})")


if __name__ == "__main__":
    main()
