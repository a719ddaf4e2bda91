"""sac_baseline.py: each piece against an independent computation, then end to end on the toy task."""

import dataclasses
import math
import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import toy_task
from common import ROOT, TINY, read_scalars

import run_plumbing
import sac_baseline as sac


def tiny_args(**overrides):
    return sac.Args(**{**TINY, **overrides})


# ------------------------------------------------------------------------------------ networks
def test_paper_size_shapes():
    critic = sac.Critic((9, 84, 84), 6, 11, 32, 100, 1024)
    actor = sac.Actor(critic.conv.out_dim, 6, 100, 1024)
    assert critic.conv.out_shape == (32, 21, 21) and critic.conv.out_dim == 14112
    assert sum(isinstance(m, torch.nn.Conv2d) for m in critic.conv.modules()) == 11
    obs = torch.randint(0, 256, (2, 9, 84, 84)).float()
    q1, q2 = critic(obs, torch.zeros(2, 6))
    assert q1.shape == q2.shape == (2, 1)
    action, log_pi = actor.sample(critic.conv(obs))
    assert action.shape == (2, 6) and log_pi.shape == (2, 1)
    assert action.abs().max() < 1
    mean, log_std = actor(critic.conv(obs))
    assert log_std.min() >= sac.LOG_STD_MIN and log_std.max() <= sac.LOG_STD_MAX


def test_delta_orthogonal_init():
    critic = sac.Critic((9, 84, 84), 6, 3, 32, 100, 64)
    gain2 = 2.0  # calculate_gain("relu") ** 2
    for conv in [m for m in critic.modules() if isinstance(m, torch.nn.Conv2d)]:
        w = conv.weight.detach()
        centre = w[:, :, 1, 1]
        off_centre = w.clone()
        off_centre[:, :, 1, 1] = 0
        assert off_centre.abs().max() == 0 and conv.bias.abs().max() == 0
        # Orthogonal with ReLU gain: the smaller Gram matrix is gain^2 * identity.
        gram = centre.T @ centre if centre.shape[0] >= centre.shape[1] else centre @ centre.T
        torch.testing.assert_close(gram, gain2 * torch.eye(len(gram)), atol=1e-5, rtol=0)
    for linear in [m for m in critic.modules() if isinstance(m, torch.nn.Linear)]:
        w = linear.weight.detach()
        gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
        torch.testing.assert_close(gram, torch.eye(len(gram)), atol=1e-5, rtol=0)
        assert linear.bias.abs().max() == 0


def test_squashed_gaussian_log_prob_matches_direct_formula():
    torch.manual_seed(0)
    mean, log_std = torch.randn(64, 4), torch.rand(64, 4) * 3 - 2
    noise = torch.randn(64, 4)
    u = mean + noise * log_std.exp()
    action = torch.tanh(u)
    direct = torch.distributions.Normal(mean, log_std.exp()).log_prob(u).sum(-1, keepdim=True)
    direct = direct - torch.log(1 - torch.tanh(u) ** 2).sum(-1, keepdim=True)
    ours = sac.squashed_gaussian_log_prob(noise, log_std, action)
    # The 1e-6 inside the log only matters where tanh saturates.
    keep = (action.abs() < 0.99).all(-1)
    torch.testing.assert_close(ours[keep], direct[keep], atol=1e-3, rtol=1e-4)
    assert keep.float().mean() > 0.5


def test_td_target_hand_made_batch():
    class FixedActor:
        def sample(self, features):
            return torch.zeros(2, 1), torch.tensor([[-1.0], [2.0]])

    agent = types.SimpleNamespace(
        actor=FixedActor(),
        critic=types.SimpleNamespace(conv=lambda obs: obs),
        critic_target=lambda obs, action: (torch.tensor([[3.0], [5.0]]), torch.tensor([[4.0], [1.0]])),
        log_alpha=torch.tensor(math.log(0.5)),
    )
    target = sac.td_target(agent, torch.tensor([[1.0], [2.0]]), torch.zeros(2, 1), torch.tensor([[1.0], [0.0]]), 0.9)
    # 1 + 0.9 * (min(3, 4) - 0.5 * -1) = 4.15; not_done = 0 -> just the reward.
    torch.testing.assert_close(target, torch.tensor([[4.15], [2.0]]))


def test_td_target_averages_each_transition_over_its_shifted_copies():
    """K = M = 2 (DrQ eq. 3): row c * B + i is copy c of transition i; each row's target is the mean
    of its transition's two targets, one per copy."""

    class FixedActor:
        def sample(self, features):
            return torch.zeros(4, 1), torch.tensor([[-1.0], [2.0], [1.0], [0.0]])

    agent = types.SimpleNamespace(
        actor=FixedActor(),
        critic=types.SimpleNamespace(conv=lambda obs: obs),
        critic_target=lambda obs, action: (
            torch.tensor([[3.0], [5.0], [7.0], [2.0]]),
            torch.tensor([[4.0], [1.0], [6.0], [3.0]]),
        ),
        log_alpha=torch.tensor(math.log(0.5)),
    )
    reward, not_done = torch.tensor([[1.0], [2.0], [1.0], [2.0]]), torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    target = sac.td_target(agent, reward, torch.zeros(4, 1), not_done, 0.9, copies=2)
    # Transition 0: copy 0 gives 1 + 0.9 * (min(3, 4) - 0.5 * -1) = 4.15, copy 1 gives
    # 1 + 0.9 * (min(7, 6) - 0.5 * 1) = 5.95; the mean is 5.05. Transition 1 ends: 2 from both.
    torch.testing.assert_close(target, torch.tensor([[5.05], [2.0], [5.05], [2.0]]))
    torch.testing.assert_close(
        sac.td_target(agent, reward, torch.zeros(4, 1), not_done, 0.9), torch.tensor([[4.15], [2.0], [5.95], [2.0]])
    )  # one copy: no averaging


def test_soft_update_uses_two_taus():
    torch.manual_seed(0)
    args = tiny_args()
    agent = sac.make_agent((9, 32, 32), 2, args, "cpu")
    for p in agent.critic_target.parameters():
        p.data.normal_()
    before = {k: v.clone() for k, v in agent.critic_target.state_dict().items()}
    online = agent.critic.state_dict()
    sac.update_target(agent, args)
    after = agent.critic_target.state_dict()
    for key in before:
        tau = args.critic_tau if key.startswith(("q1.", "q2.")) else args.encoder_tau
        torch.testing.assert_close(after[key], (1 - tau) * before[key] + tau * online[key])
    assert args.critic_tau == 0.01 and args.encoder_tau == 0.05


# -------------------------------------------------------------------------------- augmentation
def test_random_shift_is_an_integer_crop_of_the_padded_image():
    torch.manual_seed(0)
    obs = torch.randint(0, 256, (32, 9, 20, 20)).float()
    out = sac.random_shift(obs)
    padded = torch.nn.functional.pad(obs, (4, 4, 4, 4), mode="replicate")
    shifts = []
    for i in range(len(obs)):
        matches = [
            (dy, dx) for dy in range(9) for dx in range(9) if torch.equal(out[i], padded[i, :, dy : dy + 20, dx : dx + 20])
        ]
        assert len(matches) == 1, f"sample {i} is not an exact crop"
        shifts.append(matches[0])
    assert len(set(shifts)) > 10  # independent per sample
    assert out.shape == obs.shape


def test_shifted_copies_repeat_the_batch_with_a_shift_per_row():
    torch.manual_seed(0)
    batch = (
        torch.randint(0, 256, (16, 9, 20, 20)).float(),
        torch.rand(16, 2),
        torch.rand(16, 1),
        torch.randint(0, 256, (16, 9, 20, 20)).float(),
        torch.rand(16, 1).round(),
    )
    obs, action, reward, next_obs, not_done = sac.shifted_copies(batch, 2)
    assert obs.shape == next_obs.shape == (32, 9, 20, 20)
    for copied, original in ((action, batch[1]), (reward, batch[2]), (not_done, batch[4])):
        assert torch.equal(copied, torch.cat([original, original]))  # copy after copy
    for shifted, original in ((obs, batch[0]), (next_obs, batch[3])):
        padded = torch.nn.functional.pad(original, (4, 4, 4, 4), mode="replicate")
        shifts = [
            [
                (dy, dx)
                for dy in range(9)
                for dx in range(9)
                if torch.equal(shifted[row], padded[row % 16, :, dy : dy + 20, dx : dx + 20])
            ]
            for row in range(32)
        ]
        assert all(len(found) == 1 for found in shifts)  # each row an exact crop of its transition
        assert sum(shifts[i] != shifts[16 + i] for i in range(16)) > 12  # the two copies shifted independently
    assert sac.shifted_copies(batch, 1)[1] is batch[1]  # one copy: nothing repeated


# ---------------------------------------------------------------------------------- buffer
def collect(env_id, steps, seed=0, capacity=10_000):
    """Run the toy env with random actions into a buffer and record the env's own transitions."""
    env = toy_task.make_toy_env(env_id, seed)
    buffer = sac.ReplayBuffer(capacity, (3, 32, 32), 2, 3, "cpu", seed)
    rng = np.random.default_rng(seed)
    obs, _ = env.reset()
    buffer.add_first(obs[-3:])
    recorded = {}
    for _ in range(steps):
        action = rng.uniform(-1, 1, 2).astype(np.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(next_obs[-3:], action, reward, terminated)
        recorded[action.tobytes()] = (obs, next_obs, reward)
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
            buffer.add_first(obs[-3:])
    return buffer, recorded


@pytest.mark.parametrize("capacity", [10_000, 97])  # 97: the ring wraps many times
def test_buffer_rebuilds_the_env_stacks_across_episodes(capacity):
    buffer, recorded = collect("toy-reach", 180, capacity=capacity)  # episodes of 50 steps
    seen_first = 0
    for _ in range(8):
        obs, action, reward, next_obs, not_done = buffer.sample(64)
        for i in range(64):
            env_obs, env_next, env_reward = recorded[action[i].numpy().tobytes()]
            np.testing.assert_array_equal(obs[i].numpy(), env_obs)
            np.testing.assert_array_equal(next_obs[i].numpy(), env_next)
            assert reward[i, 0] == pytest.approx(env_reward)
            seen_first += int((env_obs[:3] == env_obs[3:6]).all() and (env_obs[:3] == env_obs[6:]).all())
        assert not_done.min() == 1  # time-limit ends bootstrap
    assert seen_first > 0  # episode starts were sampled and rebuilt correctly


def test_buffer_stores_each_frame_once_and_samples_reproducibly():
    buffer = sac.ReplayBuffer(1000, (3, 84, 84), 6, 3, "cpu", 0)
    assert buffer.frames.nbytes == 1000 * 3 * 84 * 84
    assert 3 * 84 * 84 <= run_plumbing.bytes_per_frame(buffer) < 21_300  # ~21 KB per transition, not 9 or 18 channels
    a, _ = collect("toy-reach", 120, seed=3)
    b, _ = collect("toy-reach", 120, seed=3)
    for x, y in zip(a.sample(32), b.sample(32)):
        assert torch.equal(x, y)


# ---------------------------------------------------------------------------------- updates
def test_same_seed_same_losses():
    def run():
        torch.manual_seed(0)
        args = tiny_args(augmentation="shift")
        agent = sac.make_agent((9, 32, 32), 2, args, "cpu")
        buffer, _ = collect("toy-reach", 100)
        return [{k: v.item() for k, v in sac.update(agent, buffer.sample(16), step, args, -2.0).items()} for step in range(4)]

    first, second = run(), run()
    assert first == second
    assert "losses/actor_loss" in first[0] and "losses/actor_loss" not in first[1]


def test_update_with_two_shift_copies_against_a_hand_computation(monkeypatch):
    """--shift-copies 2: the critic's loss is the mean over all 2B rows against each transition's
    averaged target; the actor reads the first copy's B rows."""
    torch.manual_seed(0)
    args = tiny_args(augmentation="shift", shift_copies=2)
    agent = sac.make_agent((9, 32, 32), 2, args, "cpu")
    buffer, _ = collect("toy-reach", 100)
    batch = buffer.sample(8)
    torch.manual_seed(1)  # the update draws the same shifts, then the same target actions
    obs, action, reward, next_obs, not_done = sac.shifted_copies(batch, 2)
    per_row = sac.td_target(agent, reward, next_obs, not_done, args.gamma)  # one target per row
    target = (per_row[:8] + per_row[8:]).repeat(2, 1) / 2
    with torch.no_grad():
        q1, _ = agent.critic(obs, action)
    actor_obs = []
    monkeypatch.setattr(sac, "update_actor_and_alpha", lambda agent, obs, target_entropy: actor_obs.append(obs) or {})
    torch.manual_seed(1)
    metrics = sac.update(agent, batch, 0, args, -2.0)
    assert metrics["losses/qf1_loss"].item() == pytest.approx(((q1 - target) ** 2).mean().item(), rel=1e-6)
    assert metrics["losses/qf1_values"].item() == pytest.approx(q1.mean().item(), rel=1e-6)
    assert metrics["losses/qf1_spread"].item() == pytest.approx(q1.std().item(), rel=1e-5)  # over all 2B rows
    assert torch.equal(actor_obs[0], obs[:8])


@pytest.mark.parametrize("alpha, beta", [(0.5, 0.5), (0.3, 0.7)])
def test_svea_update_against_the_originals_two_formulas(alpha, beta):
    """--augmentation svea (Hansen et al. 2021): our one critic pass over [obs; overlaid obs] gives the
    original's loss and gradients, whichever of its branches applies: for alpha = beta, (alpha + beta) x
    the MSE over the stacked batch; otherwise alpha x the clean MSE + beta x the overlaid one, two passes.
    The overlay is 0.5 obs + 0.5 image over each frame; the target comes from the clean next_obs; the
    actor reads the clean obs."""
    torch.manual_seed(0)
    args = tiny_args(augmentation="svea", svea_alpha=alpha, svea_beta=beta, critic_lr=0.0)  # lr 0: the step moves nothing
    agent = sac.make_agent((9, 32, 32), 2, args, "cpu")
    buffer, _ = collect("toy-reach", 100)
    batch, images = buffer.sample(8), torch.randint(0, 256, (8, 3, 32, 32)).float()
    torch.manual_seed(1)  # the update draws the same shifts, then the same target actions
    obs, action, reward, next_obs, not_done = sac.shifted_copies(batch, 1)
    target = sac.td_target(agent, reward, next_obs, not_done, args.gamma)
    overlaid = 0.5 * obs + 0.5 * torch.cat([images] * 3, dim=1)
    agent.critic.zero_grad()
    if alpha == beta:
        q1, q2 = agent.critic(torch.cat([obs, overlaid]), torch.cat([action, action]))
        expected = (alpha + beta) * (F.mse_loss(q1, target.repeat(2, 1)) + F.mse_loss(q2, target.repeat(2, 1)))
    else:
        expected = sum(
            w * (F.mse_loss(q1, target) + F.mse_loss(q2, target))
            for w, (q1, q2) in ((alpha, agent.critic(obs, action)), (beta, agent.critic(overlaid, action)))
        )
    expected.backward()
    expected_grads = [p.grad.clone() for p in agent.critic.parameters()]
    actor_obs = []
    real_actor_update = sac.update_actor_and_alpha
    sac.update_actor_and_alpha = lambda agent, obs, target_entropy: actor_obs.append(obs) or {}
    try:
        torch.manual_seed(1)
        metrics = sac.update(agent, batch, 0, args, -2.0, images)
    finally:
        sac.update_actor_and_alpha = real_actor_update
    assert metrics["losses/critic_loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    for ours, theirs in zip((p.grad for p in agent.critic.parameters()), expected_grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)
    assert torch.equal(actor_obs[0], obs)  # clean, shifted
    with torch.no_grad():
        q1_clean, _ = agent.critic(obs, action)
    assert metrics["losses/qf1_loss"].item() == pytest.approx(F.mse_loss(q1_clean, target).item(), rel=1e-6)


def test_svea_trains_end_to_end(toy_envs, tmp_path):
    """A short SVEA run draws one overlay image per row at every update from the default (dead-leaves)
    family, logs its losses, and its checkpoint holds --augmentation svea and its weights."""
    args = tiny_args(
        env_id="toy-reach", augmentation="svea", svea_beta=0.7, total_timesteps=60, learning_starts=40, cuda=False,
        eval_freq=60, eval_episodes=1, eval_modes=("train",), runs_dir=str(tmp_path), run_name="svea", log_freq=10,
    )  # fmt: skip
    drawn = []
    real_sample = sac.envs.OverlayImages.sample
    sac.envs.OverlayImages.sample = lambda self, n: drawn.append(n) or real_sample(self, n)
    try:
        run_dir = sac.main(args)
    finally:
        sac.envs.OverlayImages.sample = real_sample
    assert drawn == [16] * (40 + 19)  # the burst of 40 at step 40, then one per step to 59
    scalars = read_scalars(run_dir)
    assert "losses/svea_overlay_loss" in scalars and "losses/critic_loss" in scalars
    saved = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=False)
    assert saved["args"]["augmentation"] == "svea" and saved["args"]["svea_beta"] == 0.7


def test_rad_renders_larger_crops_when_updating_and_acts_on_the_centre(toy_envs, capsys):
    """--augmentation crop (RAD): the env renders image_size + 16 and the buffer stores that; the update crops obs and
    next_obs, each on its own, to image_size; acting reads the centre crop (the same action as on the cropped obs)."""
    args = tiny_args(
        env_id="toy-reach", augmentation="crop", total_timesteps=30, learning_starts=20, eval_freq=30, eval_episodes=1,
        eval_modes=("train",), save_buffer=True, cuda=False,
    )  # fmt: skip
    crops = []
    real_crop = sac.random_crop
    sac.random_crop = lambda obs, size: crops.append((obs.shape[-1], size)) or real_crop(obs, size)
    try:
        run_dir = sac.main(args)
    finally:
        sac.random_crop = real_crop
    assert crops == [(48, 32)] * 2 * (20 + 9)  # obs and next_obs at each update: a burst of 20, then steps 21..29
    assert "frames: rendered at 48 px, random 32-px crops when updating, the centre when acting" in capsys.readouterr().out
    state = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=False)
    assert state["buffer"]["frames"].shape[1:] == (3, 48, 48)
    agent = sac.make_agent((9, 32, 32), 2, args, torch.device("cpu"))
    run_plumbing.restore(agent, state)
    obs = np.random.default_rng(0).integers(0, 256, (3, 9, 48, 48), dtype=np.uint8)
    acted = sac.policy_action(agent, obs, "cpu", deterministic=True)
    assert np.array_equal(acted, sac.policy_action(agent, np.ascontiguousarray(obs[..., 8:40, 8:40]), "cpu", True))


def test_actor_step_leaves_conv_stack_alone_and_critic_step_trains_it():
    torch.manual_seed(0)
    args = tiny_args()
    agent = sac.make_agent((9, 32, 32), 2, args, "cpu")
    buffer, _ = collect("toy-reach", 100)
    obs, action, reward, next_obs, not_done = buffer.sample(16)
    conv_before = [p.clone() for p in agent.critic.conv.parameters()]
    actor_before = [p.clone() for p in agent.actor.parameters()]
    sac.update_actor_and_alpha(agent, obs, -2.0)
    assert all(torch.equal(a, b) for a, b in zip(conv_before, agent.critic.conv.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))
    sac.update_critic(agent, obs, action, reward, next_obs, not_done, args)
    assert not all(torch.equal(a, b) for a, b in zip(conv_before, agent.critic.conv.parameters()))


def test_temperature_and_actor_move_the_right_way():
    """The signs of the two policy-side gradients (SAC, eqs. 17-18): the temperature falls while the
    policy's entropy is above the target and rises while it is below; the actor's steps raise the
    critic's value of the policy's actions (critic fixed)."""
    torch.manual_seed(0)
    args = tiny_args()
    agent = sac.make_agent((9, 32, 32), 2, args, "cpu")
    buffer, _ = collect("toy-reach", 100)
    obs = buffer.sample(32)[0]
    for target_entropy, moves in ((-100.0, -1), (100.0, +1)):
        before = agent.log_alpha.item()
        sac.update_actor_and_alpha(agent, obs, target_entropy)
        assert (agent.log_alpha.item() - before) * moves > 0

    def value_of_mean_action():
        with torch.no_grad():
            features = agent.critic.conv(obs)
            mean, _ = agent.actor(features)
            return torch.min(*agent.critic.heads(features, torch.tanh(mean))).mean().item()

    agent.log_alpha.data.fill_(math.log(1e-4))  # the entropy term aside: only the critic's value pulls
    before = value_of_mean_action()
    for _ in range(20):
        sac.update_actor_and_alpha(agent, obs, -2.0)
    assert value_of_mean_action() > before + 1e-3


def test_returned_losses_hold_no_graph():
    """The losses sit in `metrics` until they are logged: with their graphs they would keep every
    activation of the actor step alive until the next one."""
    torch.manual_seed(0)
    args = tiny_args()
    agent = sac.make_agent((9, 32, 32), 2, args, "cpu")
    buffer, _ = collect("toy-reach", 100)
    metrics = sac.update(agent, buffer.sample(16), 0, args, -2.0)
    assert "losses/actor_loss" in metrics and "losses/alpha_loss" in metrics
    assert all(not value.requires_grad and value.grad_fn is None for value in metrics.values())


def test_speed_flags_keep_the_maths():
    """Channels-last (the default) and --compile change only the memory layout and the kernels;
    --bf16 autocasts the networks (close, not equal)."""
    buffer, _ = collect("toy-reach", 100)
    batches = [buffer.sample(16) for _ in range(3)]

    def losses(bf16=False, **flags):
        torch.manual_seed(0)
        args = tiny_args(num_filters=16, **flags)
        agent = sac.make_agent((9, 32, 32), 2, args, "cpu")
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16, cache_enabled=False):  # as main() does
            q1, _ = agent.critic(batches[0][0], batches[0][1])
            out = [sac.update(agent, batch, step, args, -2.0)["losses/qf1_loss"].item() for step, batch in enumerate(batches)]
        return q1.dtype, agent.critic.conv.convs[0].weight, out

    cl_dtype, cl_weight, channels_last = losses()
    dtype, weight, fp32 = losses(channels_last=False)
    _, _, compiled = losses(compile=True)
    bf_dtype, _, bf16 = losses(bf16=True)
    assert cl_weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous(
        memory_format=torch.channels_last
    )
    np.testing.assert_allclose(channels_last, fp32, rtol=1e-4)
    np.testing.assert_allclose(compiled, channels_last, rtol=1e-4)
    assert dtype == cl_dtype == torch.float32 and bf_dtype == torch.bfloat16
    # The first loss differs by bf16's rounding alone; the next ones also by Adam's first steps,
    # which move every weight by +-lr, by the gradient's sign, which bf16 flips for the smallest
    # gradients (0.035 and 0.029 against 0.031 and 0.025). With autocast's weight cache on, the
    # next ones were 0.23 and 0.29: the second and third updates ran on the first one's weights.
    assert bf16[0] != fp32[0] and bf16[0] == pytest.approx(fp32[0], rel=0.02)
    np.testing.assert_allclose(bf16[1:], fp32[1:], rtol=0.3)


# ------------------------------------------------------------------------------ end to end
def test_train_checkpoint_evaluate_resume(toy_envs, capsys):
    args = tiny_args(
        env_id="toy-reach",
        total_timesteps=240,
        learning_starts=100,
        eval_freq=120,
        eval_episodes=2,
        eval_modes=("train", "video_hard"),
        save_freq=120,
        log_freq=20,
        console_freq=120,
        buffer_size=1000,
        save_buffer=True,
    )
    run_dir = sac.main(args)
    checkpoint = os.path.join(run_dir, "checkpoint.pt")
    scalars = read_scalars(run_dir)
    for tag in (
        "charts/episodic_return",
        "charts/SPS",
        "charts/frames",
        "losses/qf1_loss",
        "losses/qf2_loss",
        "losses/qf1_spread",
        "losses/actor_loss",
        "losses/alpha",
        "losses/alpha_loss",
        "eval/train/episodic_return",
        "eval/video_hard/episodic_return",
    ):
        assert tag in scalars, tag
    assert [s for s, _ in scalars["eval/train/episodic_return"]] == [120, 240]
    state = torch.load(checkpoint, weights_only=False)
    assert state["step"] == 240 and set(state["agent"]) >= {"actor", "critic", "critic_target", "log_alpha", "actor_optimizer"}
    assert not os.path.exists(checkpoint + ".tmp")
    out = capsys.readouterr().out
    assert "step 240/240" in out and "replay buffer: 246 frames" in out  # 240 steps + 5 episode starts + 1 spare

    returns = sac.main(
        tiny_args(env_id="toy-reach", eval_checkpoint=checkpoint, eval_episodes=3, eval_modes=("train", "color_hard"))
    )
    assert set(returns) == {"train", "color_hard"} and len(returns["train"]) == 3
    assert "+-" in capsys.readouterr().out

    resumed_dir = sac.main(tiny_args(resume=checkpoint, total_timesteps=300))
    assert resumed_dir == run_dir
    assert "resumed at step 240 with 245 frames" in capsys.readouterr().out and len(state["buffer"]["frames"]) == 245
    resumed = torch.load(checkpoint, weights_only=False)
    assert resumed["step"] == 300
    assert max(s for s, _ in read_scalars(run_dir)["losses/qf1_loss"]) == 300
    # Training went on from the checkpoint's networks, not from a fresh init.
    assert resumed["agent"]["log_alpha"] != state["agent"]["log_alpha"]


def test_bf16_burst_trains_the_current_weights(toy_envs):
    """--bf16 runs the first-updates burst inside one autocast context. With autocast's weight cache
    on, every forward pass of the burst used the bf16 weights of its first update while Adam moved
    the fp32 ones, and the critic diverged (Q ~ 1e7 on cartpole-swingup at 10k frames). Trained in
    bf16, the burst must end near where the same burst in fp32 ends (same seed, same batches)."""

    def critic_after_burst(bf16):
        run_dir = sac.main(
            tiny_args(
                env_id="toy-reach",
                seed=2,
                learning_starts=150,
                total_timesteps=151,
                eval_freq=1000,
                eval_episodes=1,
                eval_modes=("train",),
                buffer_size=500,
                bf16=bf16,
                run_name=f"burst_bf16_{bf16}",
            )
        )
        critic = torch.load(os.path.join(run_dir, "checkpoint.pt"), weights_only=False)["agent"]["critic"]
        return torch.cat([value.flatten() for value in critic.values()])

    fp32, bf16 = critic_after_burst(False), critic_after_burst(True)
    # Relative distance of the critic's weights: 0.06 measured; 2.2 with autocast's weight cache on.
    assert 0 < (bf16 - fp32).norm() / fp32.norm() < 0.3


def test_batched_evaluation_equals_a_direct_rollout_per_mode(toy_envs):
    """The modes' envs run in worker processes and step together: each mode's returns must be
    those of its own env, seeded as run_plumbing.make_eval_envs seeds it (the word at the mode's
    place in ALL_MODES), stepped alone; and a mode evaluated alone plays the same episodes."""
    torch.manual_seed(0)
    args = tiny_args(env_id="toy-reach_distract", eval_modes=("train", "color_hard", "video_easy"), eval_episodes=2, seed=5)
    agent = sac.make_agent((9, 32, 32), 2, args, "cpu")
    seed = np.random.SeedSequence(5)
    eval_envs = run_plumbing.make_eval_envs(args, seed)
    returns, first_obs, _ = sac.evaluate(agent, eval_envs, args, "cpu", 0.98)
    eval_envs.close()
    for i, mode in enumerate(args.eval_modes):
        word = seed.generate_state(len(sac.envs.ALL_MODES))[sac.envs.ALL_MODES.index(mode)]
        env, expected = toy_task.make_toy_env(args.env_id, int(word), mode), []
        for _ in range(2):
            obs, _ = env.reset()
            if not expected:
                np.testing.assert_array_equal(first_obs[i], obs)
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(sac.policy_action(agent, obs[None], "cpu", True)[0])
                total, done = total + reward, terminated or truncated
            expected.append(total)
        np.testing.assert_allclose(returns[mode], expected, rtol=1e-6)
    assert len({r.sum() for r in returns.values()}) == 3  # the modes really differ
    alone = dataclasses.replace(args, eval_modes=("video_easy",))
    eval_envs = run_plumbing.make_eval_envs(alone, np.random.SeedSequence(5))
    returns_alone, first_alone, _ = sac.evaluate(agent, eval_envs, alone, "cpu", 0.98)
    eval_envs.close()
    np.testing.assert_array_equal(first_alone[0], first_obs[2])
    np.testing.assert_allclose(returns_alone["video_easy"], returns["video_easy"], rtol=1e-6)


def test_checkpoint_errors_are_one_line(toy_envs, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(sac.envs.ConfigError, match="cannot read checkpoint"):
        sac.main(tiny_args(env_id="toy-reach", eval_checkpoint=str(bad)))
    with pytest.raises(sac.envs.ConfigError, match="checkpoint not found"):
        sac.main(tiny_args(env_id="toy-reach", resume=str(tmp_path / "missing.pt")))
    run_dir = sac.main(
        tiny_args(
            env_id="toy-reach",
            total_timesteps=20,
            learning_starts=10,
            eval_freq=20,
            eval_episodes=1,
            eval_modes=("train",),
            buffer_size=100,
        )
    )
    checkpoint = os.path.join(run_dir, "checkpoint.pt")
    with pytest.raises(sac.envs.ConfigError, match=r"--env-id toy-reach_distract \(checkpoint: toy-reach\): contradicts"):
        sac.main(tiny_args(env_id="toy-reach_distract", eval_checkpoint=checkpoint, eval_modes=("train",)))
    with pytest.raises(sac.envs.ConfigError, match=r"--num-filters 4 \(checkpoint: 8\)"):
        sac.main(tiny_args(env_id="toy-reach", num_filters=4, eval_checkpoint=checkpoint, eval_modes=("train",)))


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--env-id", "nope-nope"], "nope-nope"),
        (["--eval-modes", "train", "fog"], "fog"),
        (["--eval-checkpoint", "missing.pt", "--eval-modes", "train"], "missing.pt"),
        (["--video-hard-dir", "/no/such/folder"], "/no/such/folder"),
        (["--shift-copies", "2"], "--shift-copies 2 needs --augmentation shift or svea"),
        (["--augmentation", "crop", "--shift-copies", "2"], "(--augmentation crop shifts no copies)"),
        (["--augmentation", "shift", "--shift-copies", "0"], "--shift-copies 0: must be at least 1"),
        (["--total-timestep", "5"], "unrecognized --total-timestep 5 (did you mean --total-timesteps?)"),  # a typo
        (["--augmentation", "flip"], "invalid choice 'flip' for argument '--augmentation'"),
        (["--svea-beta", "0.3"], "--svea-beta: SVEA's, used only with --augmentation svea"),
        (["--overlay-dir", "."], "--overlay-dir: SVEA's, used only with --augmentation svea"),
        (["--augmentation", "svea", "--svea-alpha", "-1"], "--svea-alpha -1.0: must be 0 or more"),
        (["--augmentation", "svea", "--overlay-dir", "/no/such/folder"], "--overlay-dir /no/such/folder: no such folder"),
    ],
)
def test_cli_bad_input_is_one_line(flags, message, tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "sac_baseline.py"), *flags],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr


# ------------------------------------------------------------------------------- learning
def test_learns_the_toy_task_better_than_random(toy_envs):
    """A broken loss does not get here: SAC from pixels must clearly beat random actions."""
    args = tiny_args(
        env_id="toy-reach",
        seed=0,
        augmentation="shift",
        total_timesteps=4000,
        learning_starts=200,
        num_filters=16,
        projection_dim=32,
        hidden_dim=128,
        batch_size=64,
        eval_freq=4000,
        eval_episodes=10,
        eval_modes=("train",),
        buffer_size=5000,
        console_freq=500,
    )
    run_dir = sac.main(args)
    trained = read_scalars(run_dir)["eval/train/episodic_return"][-1][1]
    env, rng, random_returns = toy_task.make_toy_env("toy-reach", 1), np.random.default_rng(0), []
    for _ in range(10):
        env.reset()
        random_returns.append(sum(env.step(rng.uniform(-1, 1, 2))[1] for _ in range(toy_task.EPISODE_LEN)))
    print(f"toy-reach: trained {trained:.1f}, random {np.mean(random_returns):.1f}")
    assert trained > np.mean(random_returns) + 10, (trained, np.mean(random_returns))
