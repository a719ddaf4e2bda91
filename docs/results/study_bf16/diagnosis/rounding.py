"""Is the collapsed state an effect of bf16 rounding (the per-observation part of the conv output
rounded away at the projection's input)? On one replay batch of 256 of a checkpoint: the conv
output's common part and per-observation part, and the spread over the batch of the features, Q1 and
the actor's mean action from an fp32 and from a bf16-autocast forward pass.

    python docs/results/study_bf16/diagnosis/rounding.py CHECKPOINT
"""
import os, sys

import torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # encoder_state.py: loading a checkpoint
torch.set_num_threads(1)
from encoder_state import load

path = sys.argv[1]
_, agent, buffer, _ = load(path)
torch.manual_seed(0)
obs, action, *_ = buffer.sample(256)
with torch.no_grad():
    out = agent.critic.conv(obs)
    common = out.mean(0)
    dev = out - common
    print(f"conv out: mean|x| {out.abs().mean():.3f}, |common| mean {common.abs().mean():.3f}, per-sample deviation rms {dev.pow(2).mean().sqrt():.4f}")
    for bf in (False, True):
        with torch.autocast("cpu", torch.bfloat16, enabled=bf):
            o = agent.critic.conv(obs)
            p = agent.critic.projection(o)
            q1, q2 = agent.critic(obs, action)
            mean, _ = agent.actor(o)
        print(f"{'bf16' if bf else 'fp32'}: proj std {p.float().std(0).mean():.4f}  Q1 std {q1.float().std():.4f}  act std {mean.float().std(0).mean():.4f}  conv out dtype {o.dtype}")
    # the projection's input rounded to bf16, the rest fp32: how much of the per-sample part survives
    rounded = out.bfloat16().float()
    print(f"conv out rounded to bf16: deviation rms kept {(rounded - rounded.mean(0)).pow(2).mean().sqrt():.4f}, rounding error rms {(rounded - out).pow(2).mean().sqrt():.4f}")
