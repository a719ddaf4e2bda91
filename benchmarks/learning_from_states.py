"""Contrast for benchmarks/learning.py: the RL core of sac_baseline.py on the task's STATE vector.

    python benchmarks/learning_from_states.py                        # cartpole-swingup, 100k frames
    python benchmarks/learning_from_states.py --env-id cartpole-balance --frames 40000

Everything but the pixels is the script's own code, imported (never copied): `make_agent`,
`update` (critic, actor, temperature, soft target update), `td_target`, `ReplayBuffer` (one
"frame" = one state vector, frame stack 1), the learning_starts burst and the act/learn order
of `main`. Only the conv stack is replaced by the identity and the projections are resized to
the state's width. If the agent learns from states and not from pixels, the defect is in the
pixel pipeline (rendering, frame stacks, encoder, augmentation); if it learns from neither, it
is in the RL core. About 6 minutes per 100k frames on 2 CPU cores (the env still renders).

Prints one line every 5 training episodes: frames, mean training return of those episodes
(stochastic policy), alpha, wall time.
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import envs  # noqa: E402
import sac_baseline as sac  # noqa: E402


class StateFeatures(nn.Module):
    """Stands in for the conv stack: the state vector is the feature vector."""

    def __init__(self, state_dim):
        super().__init__()
        self.out_dim = state_dim
        self.unused = nn.Parameter(torch.zeros(1))  # soft_update needs at least one tensor

    def forward(self, state):
        return state


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env-id", default="cartpole-swingup")
    p.add_argument("--frames", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=1)
    cli = p.parse_args()
    torch.manual_seed(cli.seed)
    args = sac.Args(env_id=cli.env_id, projection_dim=50, hidden_dim=1024, batch_size=128, channels_last=False)
    env = envs.make_env(cli.env_id, cli.seed, "train", image_size=16)
    env.action_space.seed(cli.seed)

    def state():
        observation = env._env.task.get_observation(env.physics)
        return np.concatenate([np.asarray(v, np.float32).ravel() for v in observation.values()])

    env.reset()
    state_dim, action_dim = len(state()), env.action_space.shape[0]
    agent = sac.make_agent((9, 16, 16), action_dim, args, "cpu")
    for critic in (agent.critic, agent.critic_target):
        critic.conv, critic.projection = StateFeatures(state_dim), sac.projection(state_dim, args.projection_dim)
    agent.critic_target.load_state_dict(agent.critic.state_dict())
    agent.critic_target.requires_grad_(False)
    agent.actor.projection = sac.projection(state_dim, args.projection_dim)
    agent.critic_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=args.critic_lr)
    agent.actor_optimizer = torch.optim.Adam(agent.actor.parameters(), lr=args.actor_lr)
    steps = cli.frames // env.action_repeat
    buffer = sac.ReplayBuffer(steps + steps // 100 + 10, (state_dim,), action_dim, 1, "cpu", cli.seed)
    buffer.frames = np.zeros((buffer.capacity, state_dim), np.float32)  # states, not uint8 pixels

    env.reset()
    s = state()
    buffer.add_first(s)
    episode_return, returns, start = 0.0, [], time.time()
    for step in range(steps):
        if step < args.learning_starts:
            action = env.action_space.sample()
        else:
            with torch.no_grad():
                action = agent.actor.sample(torch.as_tensor(s[None]))[0][0].numpy()
        _, reward, terminated, truncated, _ = env.step(action)
        s = state()
        buffer.add(s, action, reward, terminated)
        episode_return += reward
        if terminated or truncated:
            returns.append(episode_return)
            episode_return = 0.0
            env.reset()
            s = state()
            buffer.add_first(s)
            if len(returns) % 5 == 0:
                print(
                    f"frames {(step + 1) * env.action_repeat:>7}  train return {np.mean(returns[-5:]):6.1f}  "
                    f"alpha {agent.log_alpha.exp().item():.3f}  {time.time() - start:5.0f} s",
                    flush=True,
                )
        if step >= args.learning_starts:
            for _ in range(args.learning_starts if step == args.learning_starts else 1):
                sac.update(agent, buffer.sample(args.batch_size), step, args, -float(action_dim))


if __name__ == "__main__":
    main()
