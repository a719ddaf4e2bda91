"""Does the critic's encoder still see the observation? On one replay batch of 256: per ReLU of
the conv stack, the fraction of units (channel x position) zero on every sample; the std over the
batch of the conv output, the projection, Q1 and the actor's mean action."""
import os, sys

import torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", ".."))
torch.set_num_threads(1)
import run_plumbing, sgqn, sac_baseline
def load(path):
    """The module (sgqn or sac_baseline), agent, replay buffer and state of a checkpoint."""
    mod = sgqn if "sgqn" in path else sac_baseline
    state = run_plumbing.load_checkpoint(path, mod.ALGORITHM)
    args = mod.Args(**{k: v for k, v in state["args"].items() if k in mod.Args.__dataclass_fields__})
    bs = state["buffer"]
    frame_shape, action_dim = bs["frames"].shape[1:], bs["actions"].shape[1]
    agent = mod.make_agent((3 * args.frame_stack, *frame_shape[1:]), action_dim, args, torch.device("cpu"))
    buffer = mod.ReplayBuffer(len(bs["frames"]), frame_shape, action_dim, args.frame_stack, "cpu", 0)
    run_plumbing.restore(agent, state, buffer)
    return mod, agent, buffer, state


if __name__ == "__main__":
    for path in sys.argv[1:]:
        mod, agent, buffer, state = load(path)
        torch.manual_seed(0)
        obs, action, *_ = buffer.sample(256)
        with torch.no_grad():
            h, dead = obs / 255.0, []
            for layer in agent.critic.conv.convs:
                h = layer(h)
                if isinstance(layer, torch.nn.ReLU):
                    dead.append(f"{(h == 0).all(0).float().mean():.2f}")
            out = agent.critic.conv(obs)
            feats = agent.critic.projection(out)
            q1, _ = agent.critic(obs, action)
            mean, log_std = agent.actor(out)
        print(path.split("/")[-2], "step", state["step"], "buffer", len(buffer))
        print(f"  dead units after each ReLU: {' '.join(dead)}; conv output std over batch {out.std(0).mean():.4f} (mean |x| {out.abs().mean():.4f})")
        print(f"  projection std over batch {feats.std(0).mean():.4f}; Q1 mean {q1.mean():.2f} std {q1.std():.3f}")
        print(f"  actor mean std over batch {mean.std(0).mean():.4f}, tanh(mean) {torch.tanh(mean).mean(0).tolist()}, std {log_std.exp().mean():.3f}")
