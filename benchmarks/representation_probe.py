"""Does a trained critic's representation hold the task's state? A probe of a checkpoint.

    python benchmarks/representation_probe.py runs/learning/cartpole-swingup__drq__1/checkpoint.pt
    python benchmarks/representation_probe.py CHECKPOINT --frames 24000 --seed 11

Plays random-action episodes of the checkpoint's task (train mode, the checkpoint's action repeat
and frames as its run rendered them: RAD's and SODA's 16 px larger, their centre seen by the critic) and records, after each agent step, the frame stack and the task's true state
(dm_control's observation vector; for cartpole: cart position, pole cos and sin, cart velocity,
pole angular velocity). The stacks go through the critic's conv stack and projection: the
features the Q heads read. A 2-layer MLP readout (256 units, as nonlinear as the heads) is fitted
on 70% of the samples, and its held-out R^2 per state dimension (on 20%, stopped early on the last
10%) is printed, for the trained
critic and for the same architecture freshly initialised (what the network holds before any
learning). R^2 near 1: the state can be read from the features; near 0: it cannot. Works with
checkpoints of sac_baseline.py, sgqn.py and soda.py; it calls their own code (never a copy of it).
About 2 minutes for 3000 agent steps on one CPU core, most of it rendering.
"""

import argparse
import dataclasses
import importlib
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import envs  # noqa: E402
import run_plumbing  # noqa: E402

SCRIPTS = ("sac_baseline", "sgqn", "soda")  # the scripts whose checkpoints this reads (their ALGORITHM)


def collect(env, steps, seed):
    """(stacks uint8 (N, 9, H, W), true states (N, D), state names) from random-action episodes."""
    env.action_space.seed(seed)
    observation = env._env.task.get_observation(env.physics)
    names = [f"{key}[{i}]" if np.size(value) > 1 else key for key, value in observation.items() for i in range(np.size(value))]

    def state():
        observation = env._env.task.get_observation(env.physics)
        return np.concatenate([np.asarray(v, np.float32).ravel() for v in observation.values()])

    stacks, states = [], []
    env.reset()
    for _ in range(steps):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        stacks.append(obs), states.append(state())
        if terminated or truncated:
            env.reset()
    return np.stack(stacks), np.stack(states), names


def critic_features(critic, stacks, batch=250):
    """The critic's projection output (what its Q heads read), in batches."""
    with torch.no_grad():
        return torch.cat(
            [
                critic.projection(critic.conv(torch.as_tensor(stacks[i : i + batch]).float()))
                for i in range(0, len(stacks), batch)
            ]
        )


def readout_r2(features, targets, steps=3000, seed=0):
    """Held-out R^2 per target dimension of an MLP readout fitted on 70% of the samples. Each
    dimension is scored on 20% at the step where its loss on the remaining 10% was lowest: a
    readout trained on longer learns the noise of its samples, one dimension sooner than another."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(features))
    train, val, test = np.split(order, [int(0.7 * len(order)), int(0.8 * len(order))])
    mean, std = targets[train].mean(0), targets[train].std(0) + 1e-8
    y = torch.as_tensor((targets - mean) / std, dtype=torch.float32)
    x = torch.as_tensor(features, dtype=torch.float32)
    torch.manual_seed(seed)
    readout = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, y.shape[1]),
    )
    optimizer = torch.optim.Adam(readout.parameters(), lr=1e-3)
    best_val = torch.full((y.shape[1],), float("inf"))
    test_error = torch.zeros(y.shape[1])
    for step in range(steps):
        batch = torch.as_tensor(rng.choice(train, 256))
        loss = ((readout(x[batch]) - y[batch]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == steps - 1:
            with torch.no_grad():
                val_error = ((readout(x[val]) - y[val]) ** 2).mean(0)
                better = val_error < best_val
                best_val[better] = val_error[better]
                test_error[better] = ((readout(x[test]) - y[test]) ** 2).mean(0)[better]
    return 1 - test_error.numpy() / y[test].numpy().var(0)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="a checkpoint.pt of sac_baseline.py, sgqn.py or soda.py")
    p.add_argument(
        "--frames", type=int, default=24_000, help="frames of random play to probe on (agent steps x action repeat)"
    )
    p.add_argument("--seed", type=int, default=11, help="seed of the probe's episodes, readout and fresh network")
    p.add_argument("--readout-steps", type=int, default=3000, help="Adam steps of the MLP readout")
    cli = p.parse_args()
    torch.set_num_threads(1)
    if not os.path.isfile(cli.checkpoint):
        sys.exit(f"error: checkpoint not found: {cli.checkpoint}")
    try:  # loaded once: a checkpoint with its replay buffer is hundreds of MB
        state = torch.load(cli.checkpoint, map_location="cpu", weights_only=False)
        algorithm = state["algorithm"]
        if algorithm not in SCRIPTS:  # an explicit check (an assert vanishes under python -O)
            raise ValueError(algorithm)
        script = importlib.import_module(algorithm)
    except Exception as e:
        sys.exit(
            f"error: cannot read checkpoint {cli.checkpoint} ({type(e).__name__}): is it a checkpoint.pt of sac_baseline.py, sgqn.py or soda.py?"
        )
    fields = {f.name for f in dataclasses.fields(script.Args)}
    args = script.Args(**{k: tuple(v) if isinstance(v, list) else v for k, v in state["args"].items() if k in fields})
    # The frames as the run rendered them (RAD's and SODA's larger: the conv stack sees their centre, as when acting).
    env = envs.make_env(args.env_id, cli.seed, "train", **run_plumbing.env_flags(args))
    stacks, states, names = collect(env, max(1, cli.frames // env.action_repeat), cli.seed)
    env.close()
    obs_shape, action_dim = (stacks.shape[1], args.image_size, args.image_size), env.action_space.shape[0]
    trained = script.make_agent(obs_shape, action_dim, args, "cpu")
    run_plumbing.restore(trained, state)
    torch.manual_seed(cli.seed)
    fresh = script.make_agent(obs_shape, action_dim, args, "cpu")
    print(
        f"{algorithm} checkpoint at step {state['step']} ({state['step'] * env.action_repeat} frames), {args.env_id}; "
        f"{len(stacks)} random-action stacks ({stacks.shape[-1]} px frames), held-out R^2 of an MLP readout of the critic's projection:"
    )
    print(f"{'state':24s} {'trained':>8s} {'fresh init':>10s}")
    rows = [
        readout_r2(critic_features(agent.critic, stacks).numpy(), states, cli.readout_steps, cli.seed)
        for agent in (trained, fresh)
    ]
    for name, r2_trained, r2_fresh in zip(names, *rows):
        print(f"{name:24s} {r2_trained:8.2f} {r2_fresh:10.2f}")


if __name__ == "__main__":
    main()
