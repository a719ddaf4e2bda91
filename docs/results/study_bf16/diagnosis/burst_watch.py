"""The first-updates burst of sgqn.py with the 4 x 16 preset in --bf16 (as the study runs it:
same seeding, same 1000 random steps, the same update calls), watching the critic's encoder every
EVERY updates on a fixed batch of 256 replay observations: mean |conv output|, the std over the
batch of the critic's projected features (mean over features), Q1's mean and std over the batch,
and the std over the batch of the actor's mean action. An encoder that has stopped seeing the
observation shows as a projection std and an action std near 0.

    python docs/results/study_bf16/diagnosis/burst_watch.py SEED UPDATES EVERY [field=value ...]
    e.g. ... burst_watch.py 2 400 25 bf16=0 consistency_weight=0.0

(field=value overrides sgqn.Args fields: bf16=0 for fp32, aux_update_freq=0, consistency_weight=0.0.)"""
import os, random, sys, time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", ".."))
import sgqn, envs
seed, n_updates, every = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
over = dict(kv.split("=") for kv in sys.argv[4:])
typed = {k: (type(getattr(sgqn.Args, k))(v) if not isinstance(getattr(sgqn.Args, k), bool) else v == "1") for k, v in over.items()}
args = sgqn.Args(env_id="cartpole-swingup", seed=seed, num_conv_layers=4, num_filters=16, projection_dim=50, hidden_dim=1024,
                 batch_size=128, total_timesteps=12500, buffer_size=13000, **{"bf16": True, **typed})
args.sgqn_quantile = args.sgqn_quantile or sgqn.domain_quantile(args.env_id)
seeds = np.random.SeedSequence(args.seed, spawn_key=(0,))
buffer_seed, env_seed, eval_seed, action_seed = seeds.spawn(4)
overlay_seed = seeds.spawn(1)[0]
random.seed(args.seed); np.random.seed(args.seed); torch.manual_seed(args.seed)
env = envs.make_env(args.env_id, int(env_seed.generate_state(1)[0]), "train", action_repeat=args.action_repeat, frame_stack=args.frame_stack, image_size=args.image_size)
env.action_space.seed(int(action_seed.generate_state(1)[0]))
obs_shape, action_dim = env.observation_space.shape, env.action_space.shape[0]
agent = sgqn.make_agent(obs_shape, action_dim, args, torch.device("cpu"))
buffer = sgqn.ReplayBuffer(13000, (3, 84, 84), action_dim, args.frame_stack, "cpu", buffer_seed)
overlay = envs.OverlayImages(args.overlay_dir, args.image_size, int(overlay_seed.generate_state(1)[0])) if args.aux_update_freq else None
obs, _ = env.reset(); buffer.add_first(obs[-3:])
for step in range(args.learning_starts):
    a = env.action_space.sample()
    obs, r, term, trunc, _ = env.step(a); buffer.add(obs[-3:], a, r, term)
    if term or trunc:
        obs, _ = env.reset(); buffer.add_first(obs[-3:])
probe_obs, probe_act, *_ = buffer.sample(256)
buffer.rng = np.random.default_rng(buffer_seed)  # as if the probe had not drawn
def watch(i, metrics):
    with torch.no_grad():
        out = agent.critic.conv(probe_obs)
        proj = agent.critic.projection(out)
        q1, _ = agent.critic(probe_obs, probe_act)
        mean, _ = agent.actor(out)
    m = {k.split("/")[-1]: f"{float(v):.3g}" for k, v in metrics.items() if k.split("/")[-1] in ("consistency_loss", "qf1_loss", "aux_loss", "entropy")}
    print(f"{i:5d} conv|x| {out.abs().mean():8.3f} proj_std {proj.std(0).mean():.4f} Q1 {q1.mean():6.2f}±{q1.std():.3f} act_std {mean.std(0).mean():.4f} {m}", flush=True)
watch(0, {})
t0 = time.time()
step = args.learning_starts
with torch.autocast("cpu", torch.bfloat16, enabled=args.bf16, cache_enabled=False):
    for i in range(1, n_updates + 1):
        aux_step = args.aux_update_freq and step % args.aux_update_freq == 0
        images = torch.as_tensor(overlay.sample(args.batch_size)).float() if aux_step else None
        metrics = sgqn.update(agent, buffer.sample(args.batch_size), step, args, -float(action_dim), images)
        if i % every == 0:
            watch(i, metrics)
print(f"{n_updates} updates in {time.time() - t0:.0f} s")
