"""Wall time of one evaluation round over all five modes, as `main` runs it: the modes' envs step
together, each in its own worker process (`run_plumbing.make_eval_envs`).

    MUJOCO_GL=egl python benchmarks/eval_speed.py                   # sgqn, cheetah-run, 1 episode
    python benchmarks/eval_speed.py --algorithm sac --episodes 2 --repeats 3 --paper-size

Builds the eval envs with `run_plumbing.make_eval_envs(args, seed)` and an agent with the script's
`make_agent` (small by default: 4 convs x 16 filters, hidden 256; `--paper-size` for the script's
defaults), then times `module.evaluate(agent, eval_envs, args, device, rho)` `--repeats` times and
prints the median wall seconds (cheetah-run: 250 agent steps per episode per mode). Each repeat also
runs it with the saliency measure off (no frame measured), interleaved, for the measure's cost.
"""

import argparse
import importlib
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import envs  # noqa: E402,F401  (sets MUJOCO_GL)
import run_plumbing  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algorithm", choices=("sac", "sgqn"), default="sgqn")
    p.add_argument("--env-id", default="cheetah-run")
    p.add_argument("--episodes", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--paper-size", action="store_true")
    opts = p.parse_args()

    module = importlib.import_module("sac_baseline" if opts.algorithm == "sac" else "sgqn")
    torch.set_num_threads(opts.threads)
    torch.manual_seed(0)
    small = {} if opts.paper_size else dict(num_conv_layers=4, num_filters=16, hidden_dim=256)
    args = module.Args(env_id=opts.env_id, cuda=False, eval_episodes=opts.episodes, **small)
    device = torch.device("cpu")
    t = time.perf_counter()
    eval_envs = run_plumbing.make_eval_envs(args, np.random.SeedSequence(args.seed))
    build = time.perf_counter() - t
    agent = module.make_agent(eval_envs.single_observation_space.shape, eval_envs.single_action_space.shape[0], args, device)

    walls, without = [], []
    rho, every = module.domain_quantile(args.env_id), module.SALIENCY_EVERY
    for _ in range(opts.repeats):
        for measured, times in ((True, walls), (False, without)):
            module.SALIENCY_EVERY = every if measured else 10**9  # off: no step of the episode is measured
            t = time.perf_counter()
            module.evaluate(agent, eval_envs, args, device, rho)
            times.append(time.perf_counter() - t)
    module.SALIENCY_EVERY = every
    size = "paper-size" if opts.paper_size else "small"
    print(
        f"{module.__name__}.py evaluate, {opts.env_id}, modes {' '.join(args.eval_modes)}, {opts.episodes} episode(s) "
        f"per mode, {size} agent, {opts.threads} threads; building the envs took {build:.1f} s"
    )
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; repeats: {' '.join(f'{w:.1f}' for w in walls)} s")
    eval_envs.close()
    print(f"without the saliency measure: {' '.join(f'{w:.1f}' for w in without)} s")
    cost = statistics.median(walls) - statistics.median(without)
    print(f"saliency measure: {cost:.1f} s of the round ({100 * cost / statistics.median(walls):.0f}%)")
    print(f"eval round wall s: {statistics.median(walls):.1f}")


if __name__ == "__main__":
    main()
