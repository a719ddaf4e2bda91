"""Does bf16 autocast change SGQN's saliency mask? Final checkpoint of the bf16 seed-1 run,
one batch of 128 from its replay buffer, mask from fp32 vs bf16 guided backprop."""
import os, sys

import numpy as np
import torch
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", ".."))
torch.set_num_threads(1)
import run_plumbing, sgqn
state = run_plumbing.load_checkpoint(sys.argv[1], "sgqn")
a = state["args"]
args = sgqn.Args(**{k: v for k, v in a.items() if k in sgqn.Args.__dataclass_fields__})
buf_state = state["buffer"]
frame_shape = buf_state["frames"].shape[1:]
obs_shape = (3 * args.frame_stack, *frame_shape[1:])
action_dim = buf_state["actions"].shape[1]
agent = sgqn.make_agent(obs_shape, action_dim, args, torch.device("cpu"))
buffer = sgqn.ReplayBuffer(len(buf_state["frames"]), frame_shape, action_dim, args.frame_stack, "cpu", 0)
run_plumbing.restore(agent, state, buffer)
torch.manual_seed(0)
obs, action, reward, next_obs, not_done = buffer.sample(128)
obs = sgqn.random_shift(obs)
q = args.sgqn_quantile or sgqn.domain_quantile(args.env_id)
print("quantile", q)
att32 = sgqn.guided_backprop(agent.critic, obs, action)
with torch.autocast("cpu", torch.bfloat16):
    att16 = sgqn.guided_backprop(agent.critic, obs, action)
print("att16 dtype", att16.dtype)
for name, att in (("fp32", att32), ("bf16", att16)):
    m = sgqn.saliency_mask(att, q)
    per = att.abs().view(128, 3, 3, 84, 84).amax(2).flatten(2)
    zeros = (per == 0).float().mean().item()
    uniq = np.mean([len(torch.unique(per[i, 0])) for i in range(16)])
    print(f"{name}: kept fraction {m.float().mean().item():.4f} (per-sample min {m.float().flatten(1).mean(1).min().item():.4f} max {m.float().flatten(1).mean(1).max().item():.4f}); zero-attribution pixels {zeros:.3f}; distinct values per frame {uniq:.0f}")
m32, m16 = sgqn.saliency_mask(att32, q), sgqn.saliency_mask(att16, q)
print("IoU fp32 vs bf16 masks", ((m32 & m16).sum() / (m32 | m16).sum()).item())
with torch.no_grad():
    q1, q2 = agent.critic(obs, action)
    for name, m in (("fp32", m32), ("bf16", m16)):
        mq1, mq2 = agent.critic(sgqn.masked_observation(obs, m), action)
        print(name, "mask: Q1 mean", q1.mean().item(), "masked Q1 mean", mq1.mean().item(), "consistency (unweighted)", sgqn.consistency_loss((q1, q2), (mq1, mq2)).item())
    print("TD-ish: Q1 std", q1.std().item())
