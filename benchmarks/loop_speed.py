"""Training steps per second of the REAL loop (`main`: env step, action, buffer add, sample,
update), at a small size and at the paper's size, for sac_baseline.py and sgqn.py.

    MUJOCO_GL=egl python benchmarks/loop_speed.py                       # all four configurations
    python benchmarks/loop_speed.py --algorithms sgqn --sizes paper --threads 2

Each configuration runs `module.main(module.Args(...))` in a temporary folder (main writes
`runs/`), with eval_modes=("train",) and eval_episodes=1 (main always evaluates at its last step).
Nothing in the scripts is changed: the module's `update`, `evaluate`, `log_saliency_images`,
`policy_action`, `ReplayBuffer.sample`, `run_plumbing.save_checkpoint` and `envs.DMCEnv.step` are wrapped with
timers (monkeypatched; `main` looks them up at call time). Each update call records its step.

`main` makes `learning_starts` updates at once at the first learning step (as DMC-GB); the steady
loop is what follows, one update per step. Its time per step is the time between the starts of
consecutive steady update calls, so it holds one full iteration: update, logging, policy action,
env step, buffer add, sample. Reported per configuration:
  steps/s    steady loop steps per second
  update%    share of the steady loop spent in `update`; env% in the train env's step (physics +
             rendering); act% in policy_action; sample% in buffer.sample; other% the rest
  burst      the learning_starts updates of the first learning step, in seconds
  eval/setup the final evaluation (+ saliency images) and everything outside the loop, seconds
"""

import argparse
import contextlib
import importlib
import os
import statistics
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import envs  # noqa: E402
import run_plumbing  # noqa: E402

SIZES = {"small": dict(num_conv_layers=4, num_filters=16, hidden_dim=256, batch_size=32), "paper": {}}
# (learning_starts, total_timesteps): the paper-size SGQN update is ~4 s on 2 CPU cores.
STEPS = {("sac", "small"): (20, 200), ("sgqn", "small"): (20, 200), ("sac", "paper"): (10, 50), ("sgqn", "paper"): (4, 14)}


@contextlib.contextmanager
def patched(obj, name, wrapper):
    original = getattr(obj, name)
    setattr(obj, name, wrapper(original))
    try:
        yield
    finally:
        setattr(obj, name, original)


def run(algorithm, size, env_id, threads, cuda=False, steps=None, **changes):
    """One configuration's figures (see the module docstring). `steps`: (learning_starts, total_timesteps) instead
    of STEPS's; `cuda`: on the GPU (benchmarks/gpu_check.py); `changes`: further Args fields."""
    module = importlib.import_module("sac_baseline" if algorithm == "sac" else "sgqn")
    learning_starts, total = steps or STEPS[algorithm, size]
    fields = dict(
        env_id=env_id,
        seed=1,
        cuda=cuda,
        learning_starts=learning_starts,
        total_timesteps=total,
        buffer_size=total + 10,
        eval_freq=10**9,
        eval_episodes=1,
        eval_modes=("train",),
        save_freq=10**9,
    )
    args = module.Args(**{**fields, **SIZES[size], **changes})
    events = []  # (kind, t_start, t_end, step or None)
    sync = torch.cuda.synchronize if cuda and torch.cuda.is_available() else (lambda: None)
    in_eval = [False]

    def timed(kind, step_arg=None, skip_in_eval=False):
        def wrapper(fn):
            def inner(*a, **kw):
                if skip_in_eval and in_eval[0]:
                    return fn(*a, **kw)
                sync()
                t = time.perf_counter()
                out = fn(*a, **kw)
                sync()  # on a GPU: the call's kernels are charged to it, not to the next call that waits
                events.append((kind, t, time.perf_counter(), a[step_arg] if step_arg is not None else None))
                return out

            return inner

        return wrapper

    def eval_wrapper(kind):
        def wrapper(fn):
            inner = timed(kind)(fn)

            def flagged(*a, **kw):
                in_eval[0] = True
                try:
                    return inner(*a, **kw)
                finally:
                    in_eval[0] = False

            return flagged

        return wrapper

    torch.set_num_threads(threads)
    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(module, "update", timed("update", step_arg=2)))
        stack.enter_context(patched(module, "evaluate", eval_wrapper("eval")))
        if hasattr(module, "log_saliency_images"):
            stack.enter_context(patched(module, "log_saliency_images", eval_wrapper("eval images")))
        stack.enter_context(patched(run_plumbing, "save_checkpoint", timed("checkpoint")))
        stack.enter_context(patched(module, "policy_action", timed("act", skip_in_eval=True)))
        stack.enter_context(patched(module.ReplayBuffer, "sample", timed("sample")))
        stack.enter_context(patched(envs.DMCEnv, "step", timed("env", skip_in_eval=True)))
        cwd = os.getcwd()
        with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            os.chdir(tmp)
            try:
                t0 = time.perf_counter()
                module.main(args)
                wall = time.perf_counter() - t0
            finally:
                os.chdir(cwd)

    updates = [e for e in events if e[0] == "update"]
    burst = [e for e in updates if e[3] == learning_starts]
    steady = [e for e in updates if e[3] > learning_starts]
    w0, w1 = steady[0][1], steady[-1][1]  # window: steady steps learning_starts+1 .. total-2, whole iterations
    n = len(steady) - 1

    def spent(kind):
        return sum(e[2] - e[1] for e in events if e[0] == kind and w0 <= e[1] < w1)

    window = w1 - w0
    shares = {k: spent(k) / window for k in ("update", "env", "act", "sample")}
    shares["other"] = 1 - sum(shares.values())
    eval_s = sum(e[2] - e[1] for e in events if e[0] in ("eval", "eval images"))
    return dict(
        algorithm=algorithm,
        size=size,
        updates=len(updates),
        burst_n=len(burst),
        steady_n=n,
        sps=n / window,
        update_ms=1000 * statistics.median(e[2] - e[1] for e in steady),
        shares=shares,
        burst_s=burst[-1][2] - burst[0][1],
        eval_s=eval_s,
        evaluations=sum(e[0] == "eval" for e in events),
        wall=wall,
    )


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--algorithms", nargs="+", default=["sac", "sgqn"], choices=["sac", "sgqn"])
    p.add_argument("--sizes", nargs="+", default=["small", "paper"], choices=list(SIZES))
    p.add_argument("--env-id", default="walker-walk")
    p.add_argument("--threads", type=int, default=2)
    opts = p.parse_args()

    rows = []
    for size in opts.sizes:
        for algorithm in opts.algorithms:
            print(f"running {algorithm} {size} ...", flush=True)
            rows.append(run(algorithm, size, opts.env_id, opts.threads))
    print(
        f"\n{opts.env_id}, MUJOCO_GL={os.environ.get('MUJOCO_GL')}, {opts.threads} torch threads, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print("small = --num-conv-layers 4 --num-filters 16 --hidden-dim 256 --batch-size 32; paper = script defaults")
    head = (
        f"{'config':<12}{'updates':>9}{'steady n':>9}{'steps/s':>9}{'upd ms':>9}{'update%':>9}{'env%':>7}"
        f"{'act%':>6}{'sample%':>8}{'other%':>7}{'burst s':>9}{'eval s':>8}{'wall s':>8}"
    )
    print(head)
    for r in rows:
        s = r["shares"]
        print(
            f"{r['algorithm'] + ' ' + r['size']:<12}{r['updates']:>9}{r['steady_n']:>9}{r['sps']:>9.2f}"
            f"{r['update_ms']:>9.0f}{100 * s['update']:>9.1f}{100 * s['env']:>7.1f}{100 * s['act']:>6.1f}"
            f"{100 * s['sample']:>8.1f}{100 * s['other']:>7.1f}{r['burst_s']:>9.1f}{r['eval_s']:>8.1f}{r['wall']:>8.1f}"
        )
    print(
        "updates = update calls counted (burst of learning_starts + steady); steady n = timed steady iterations; "
        "upd ms = median steady update"
    )


if __name__ == "__main__":
    main()
