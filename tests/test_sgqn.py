"""sgqn.py: the saliency machinery against independent computations, update order, equivalence
with sac_baseline.py, and a learning test where the mask must find the task-relevant pixels."""

import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import toy_task
from common import TINY, read_scalars

import sac_baseline as sac
import sgqn


def tiny_args(**overrides):
    return sgqn.Args(**{**TINY, "sgqn_quantile": 0.9, **overrides})


def tiny_critic(seed=0, obs_shape=(9, 32, 32), action_dim=2):
    torch.manual_seed(seed)
    critic = sgqn.Critic(obs_shape, action_dim, 3, 8, 16, 32)
    for p in critic.parameters():  # break the delta-orthogonal init's symmetry: all taps active
        p.data.add_(0.1 * torch.randn_like(p))
    return critic


# ----------------------------------------------------------------------------- guided backprop
class GuidedReLU(torch.autograd.Function):
    """An independent guided ReLU: backward = grad * (x > 0) * (grad > 0)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x > 0) * (grad > 0)


def run_guided(modules, x):
    for m in modules:
        x = GuidedReLU.apply(x) if isinstance(m, nn.ReLU) else m(x)
    return x


def guided_by_autograd_function(critic, obs, action):
    obs = obs.clone().requires_grad_(True)
    features = run_guided(critic.conv.convs, obs / 255.0).flatten(1)
    q1 = run_guided(critic.q1, torch.cat([critic.projection(features), action], -1))
    return torch.autograd.grad(q1.sum(), obs)[0]


def test_guided_backprop_matches_an_autograd_function_implementation():
    critic = tiny_critic()
    obs, action = torch.rand(4, 9, 32, 32) * 255, torch.rand(4, 2) * 2 - 1
    ours = sgqn.guided_backprop(critic, obs, action)
    assert ours.shape == obs.shape
    torch.testing.assert_close(ours, guided_by_autograd_function(critic, obs, action), rtol=1e-5, atol=1e-9)

    plain_obs = obs.clone().requires_grad_(True)
    plain = torch.autograd.grad(critic(plain_obs, action)[0].sum(), plain_obs)[0]
    assert (ours - plain).abs().max() > 0.1 * plain.abs().max()  # the clamp changes the map


def test_guided_backprop_on_a_network_with_a_hand_written_answer():
    # Q1 = w2 . relu(W1 x): the guided gradient is W1^T [(W1 x > 0) * relu(w2)].
    critic = tiny_critic()
    w1, w2 = torch.tensor([[1.0, -1.0], [2.0, 1.0], [-1.0, 3.0]]), torch.tensor([[1.0, -2.0, 0.5]])
    critic.conv = type("Identity", (nn.Module,), {"forward": lambda self, x: x.flatten(1)})()
    critic.projection = nn.Identity()
    critic.q1 = nn.Sequential(nn.Linear(2, 3, bias=False), nn.ReLU(), nn.Linear(3, 1, bias=False))
    critic.q1[0].weight.data, critic.q1[2].weight.data = w1, w2
    x = torch.tensor([[[[0.5]], [[0.2]]]])  # W1 x = (0.3, 1.2, 0.1): all units active
    guided = sgqn.guided_backprop(critic, x, torch.zeros(1, 0))
    expected = w1.T @ (torch.tensor([1.0, 1.0, 1.0]) * w2[0].clamp(min=0))
    torch.testing.assert_close(guided.flatten(), expected)
    assert not torch.allclose(guided.flatten(), w1.T @ w2[0])  # the plain gradient


def test_guided_backprop_leaves_no_hooks_gradients_or_graph():
    critic = tiny_critic()
    obs, action = torch.rand(2, 9, 32, 32) * 255, torch.rand(2, 2) * 2 - 1
    sgqn.guided_backprop(critic, obs, action)
    assert all(not m._backward_hooks for m in critic.modules())
    assert all(p.grad is None for p in critic.parameters())
    with pytest.raises(RuntimeError):
        sgqn.guided_backprop(critic, obs, torch.zeros(2, 5))  # wrong action size fails inside
    assert all(not m._backward_hooks for m in critic.modules())
    # The ordinary gradient afterwards is the plain one again.
    plain_obs = obs.clone().requires_grad_(True)
    grad = torch.autograd.grad(critic(plain_obs, action)[0].sum(), plain_obs)[0]
    assert (grad < 0).any() and not torch.allclose(grad, guided_by_autograd_function(critic, obs, action))


def test_guided_backprop_keep_q_gives_the_critic_outputs_with_a_plain_graph():
    """The Qs it keeps are the critic's, and the loss backpropagated through them gets the plain
    gradient (the guided clamp must not leak into the critic's update)."""
    torch.manual_seed(0)
    critic = tiny_critic()
    obs, action = torch.rand(4, 9, 32, 32) * 255, torch.rand(4, 2) * 2 - 1
    attribution, (q1, q2) = sgqn.guided_backprop(critic, obs, action, keep_q=True)
    torch.testing.assert_close(attribution, guided_by_autograd_function(critic, obs, action), rtol=1e-5, atol=1e-9)
    loss = (q1 - 1).square().mean() + (q2 + 1).square().mean()
    grads = torch.autograd.grad(loss, list(critic.parameters()))
    e1, e2 = critic(obs, action)
    torch.testing.assert_close((q1, q2), (e1, e2))
    expected = torch.autograd.grad((e1 - 1).square().mean() + (e2 + 1).square().mean(), list(critic.parameters()))
    for g, e in zip(grads, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-8)
    assert all(not m._backward_hooks for m in critic.modules())


# ---------------------------------------------------------------------------------------- mask
@pytest.mark.parametrize("quantile", [0.95, 0.98, 0.5, 0.0, 1.0])
def test_saliency_mask_matches_a_direct_quantile_and_keeps_1_minus_rho(quantile):
    torch.manual_seed(0)
    attribution = torch.randn(5, 9, 20, 20)
    mask = sgqn.saliency_mask(attribution, quantile)
    assert mask.dtype == torch.bool and mask.shape == attribution.shape
    a = attribution.numpy()
    for i in range(5):
        for f in range(3):
            per_pixel = np.abs(a[i, 3 * f : 3 * f + 3]).max(axis=0)
            expected = per_pixel >= np.quantile(per_pixel, quantile)  # numpy's default is linear too
            for c in range(3):
                np.testing.assert_array_equal(mask[i, 3 * f + c].numpy(), expected)
            assert abs(expected.mean() - (1 - quantile)) <= 1 / per_pixel.size


def test_bf16_autocast_keeps_the_saliency_mask():
    """--bf16 takes guided backprop under autocast: the attribution has bf16's 8 bits of mantissa
    (on the bf16 study run's final critic, 1500 distinct values per 84x84 frame against 4400 in
    fp32), so ties at the quantile could grow the mask. It must still keep 1 - rho of each frame's
    pixels, and nearly the same ones as fp32 (IoU 0.97 on that critic; 0.97-0.98 here)."""
    for seed in range(3):
        critic = tiny_critic(seed, obs_shape=(9, 84, 84))
        generator = torch.Generator().manual_seed(seed)
        obs = torch.randint(0, 256, (16, 9, 84, 84), generator=generator).float()
        action = torch.rand(16, 2, generator=generator) * 2 - 1
        fp32 = sgqn.saliency_mask(sgqn.guided_backprop(critic, obs, action), 0.98)
        with torch.autocast("cpu", torch.bfloat16, cache_enabled=False):  # as main() does
            bf16 = sgqn.saliency_mask(sgqn.guided_backprop(critic, obs, action), 0.98)
        kept = bf16.float().flatten(2).mean(-1)  # (B, channels)
        assert kept.min() >= 0.0201 and kept.max() <= 0.021  # 0.02 of 84 * 84 = 141.1 pixels; ties add a few
        assert (fp32 & bf16).sum() / (fp32 | bf16).sum() > 0.9


def test_masked_observation_and_consistency_loss():
    critic = tiny_critic()
    obs, action = torch.rand(4, 9, 32, 32) * 200 + 20, torch.rand(4, 2) * 2 - 1
    keep_all = torch.ones_like(obs, dtype=torch.bool)
    assert torch.equal(sgqn.masked_observation(obs, keep_all), obs)
    q = critic(obs, action)
    assert sgqn.consistency_loss(q, critic(sgqn.masked_observation(obs, keep_all), action)) == 0

    torch.manual_seed(1)
    mask = sgqn.saliency_mask(sgqn.guided_backprop(critic, obs, action), 0.9)
    masked = sgqn.masked_observation(obs, mask)
    assert torch.equal(masked[mask], obs[mask])
    grey = masked[~mask].unique()
    assert len(grey) == 1 and obs.min() <= grey <= obs.max()  # one grey level, within the batch's range
    loss = sgqn.consistency_loss(q, critic(masked, action))
    expected = sum(((q[k] - critic(masked, action)[k]) ** 2).mean() for k in range(2))
    assert loss > 0 and torch.isclose(loss, expected)


# ------------------------------------------------------------------------------------ decoder
def test_decoder_shape_at_paper_size():
    critic = sgqn.Critic((9, 84, 84), 6, 11, 32, 100, 64)
    decoder = sgqn.AttributionDecoder(critic.conv.out_shape, (9, 84, 84), 100, 6)
    assert decoder.linear.out_features == 32 * 21 * 21
    assert [m.out_channels for m in decoder.modules() if isinstance(m, nn.Conv2d)] == [128, 64, 9]
    logits = decoder(torch.zeros(2, 100), torch.zeros(2, 6))
    assert logits.shape == (2, 9, 84, 84)


def plain_decoder(decoder, features, action):
    """The original's decoder, written as it reads: nn.Upsample and a conv at the upsampled size."""
    x = F.relu(decoder.linear(torch.cat([features, action], dim=-1))).view(-1, *decoder.conv_out_shape)
    x = decoder.conv2(F.relu(F.interpolate(decoder.conv1(x), scale_factor=2)))
    return decoder.conv3(F.relu(F.interpolate(x, size=decoder.obs_hw)))


@pytest.mark.parametrize("obs_shape, layers, filters", [((9, 84, 84), 11, 8), ((9, 32, 32), 2, 8), ((6, 40, 40), 3, 4)])
def test_decoder_equals_upsample_then_conv(obs_shape, layers, filters):
    """Folded x2 upsampling (84 = 4 x 21) and the resize path (32 from 26, 40 from 34) both give
    the original's values and gradients (in float64, so any difference is maths, not rounding)."""
    torch.manual_seed(0)
    critic = sgqn.Critic(obs_shape, 3, layers, filters, 10, 16)
    decoder = sgqn.AttributionDecoder(critic.conv.out_shape, obs_shape, 10, 3).double()
    features, action = torch.randn(3, 10, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    out, expected = decoder(features, action), plain_decoder(decoder, features, action)
    assert out.shape == (3, *obs_shape)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    grads = torch.autograd.grad(out.square().sum(), list(decoder.parameters()))
    expected_grads = torch.autograd.grad(expected.square().sum(), list(decoder.parameters()))
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-10)


def test_upsample_conv_is_conv_of_the_upsampled_image():
    torch.manual_seed(1)
    conv = nn.Conv2d(5, 7, 3, padding=1).double()
    x = torch.randn(2, 5, 6, 9, dtype=torch.float64)
    torch.testing.assert_close(sgqn.upsample_conv(x, conv), conv(x.repeat_interleave(2, 2).repeat_interleave(2, 3)))


def test_aux_loss_is_bce_with_logits_against_the_post_update_mask():
    torch.manual_seed(0)
    args = tiny_args()
    agent = sgqn.make_agent((9, 32, 32), 2, args, "cpu")
    obs, action = torch.rand(4, 9, 32, 32) * 255, torch.rand(4, 2) * 2 - 1
    images = torch.rand(4, 3, 32, 32) * 255
    # Independent computation, before the step changes anything.
    target = sgqn.saliency_mask(guided_by_autograd_function(agent.critic, obs, action), args.sgqn_quantile).float()
    overlaid = 0.5 * obs + 0.5 * torch.cat([images] * 3, dim=1)
    with torch.no_grad():
        logits = agent.decoder(agent.critic.projection(agent.critic.conv(overlaid)), action)
    p = torch.sigmoid(logits)
    expected = -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()
    metrics = sgqn.update_aux(agent, obs, action, images, args)
    torch.testing.assert_close(metrics["losses/aux_loss"], expected, rtol=1e-4, atol=1e-6)
    assert metrics.keys() >= {
        "saliency/mask_iou",
        "saliency/mask_balanced_accuracy",
        "saliency/mask_precision",
        "saliency/mask_recall",
    }
    assert all(0 <= v <= 1 for k, v in metrics.items() if k.startswith("saliency/"))
    # Hand-made case: logits of +-20 in agreement with the mask -> ~0 loss; zero logits -> log 2.
    assert F.binary_cross_entropy_with_logits(40 * target - 20, target) < 1e-8
    assert torch.isclose(
        F.binary_cross_entropy_with_logits(torch.zeros_like(target), target), torch.tensor(np.log(2.0), dtype=torch.float32)
    )


def test_mask_metrics_score_an_empty_prediction_poorly():
    """The predicted-mask column was all black while plain accuracy read 0.98: the metrics must
    tell an empty (or full) prediction from a good one, on a mask of 2% of the pixels."""
    target = torch.zeros(4, 9, 32, 32, dtype=torch.bool)
    target[:, :, :4, :5] = True  # 20 of 1024 pixels per frame: about 2%
    empty, full, perfect = torch.zeros_like(target), torch.ones_like(target), target.clone()
    half = target.clone()
    half[:, :, :2] = False  # the first two of the four salient rows missed; nothing wrong added
    scores = {
        name: {k.split("/mask_")[1]: v.item() for k, v in sgqn.mask_metrics(pred, target).items()}
        for name, pred in (("empty", empty), ("full", full), ("perfect", perfect), ("half", half))
    }
    assert (empty == target).float().mean() > 0.98  # what plain accuracy would have said
    assert scores["empty"] == {"balanced_accuracy": 0.5, "precision": 0.0, "recall": 0.0, "iou": 0.0}
    assert scores["full"]["balanced_accuracy"] == 0.5 and scores["full"]["recall"] == 1.0
    assert scores["full"]["precision"] == pytest.approx(20 / 1024)
    assert scores["perfect"] == {"balanced_accuracy": 1.0, "precision": 1.0, "recall": 1.0, "iou": 1.0}
    assert scores["half"]["precision"] == 1.0 and scores["half"]["recall"] == 0.5
    assert scores["half"]["balanced_accuracy"] == pytest.approx(0.75) and scores["half"]["iou"] == 0.5


def test_domain_quantiles():
    assert (
        sgqn.domain_quantile("walker-walk")
        == sgqn.domain_quantile("cheetah-run")
        == sgqn.domain_quantile("finger-spin")
        == 0.95
    )
    assert sgqn.domain_quantile("cartpole-swingup") == sgqn.domain_quantile("ball_in_cup-catch") == 0.98


# ------------------------------------------------------------------------------- update order
def test_update_order_and_attribution_passes(monkeypatch):
    calls = []

    def record(name, fn):
        def wrapped(*a, **k):
            calls.append(name)
            return fn(*a, **k)

        return wrapped

    for name in ("update_critic", "update_actor_and_alpha", "update_target", "update_aux", "guided_backprop"):
        monkeypatch.setattr(sgqn, name, record(name, getattr(sgqn, name)))
    torch.manual_seed(0)
    args = tiny_args()
    agent = sgqn.make_agent((9, 32, 32), 2, args, "cpu")
    batch = (
        torch.rand(8, 9, 32, 32) * 255,
        torch.rand(8, 2),
        torch.rand(8, 1),
        torch.rand(8, 9, 32, 32) * 255,
        torch.ones(8, 1),
    )
    per_step = []
    for step in range(4):
        calls.clear()
        sgqn.update(agent, batch, step, args, -2.0, torch.rand(8, 3, 32, 32) * 255 if step % 2 == 0 else None)
        per_step.append(list(calls))
    even = ["update_critic", "guided_backprop", "update_actor_and_alpha", "update_target", "update_aux", "guided_backprop"]
    odd = ["update_critic", "guided_backprop"]  # no post-update attribution on odd steps
    assert per_step == [even, odd, even, odd]


def test_two_shift_copies_reach_the_critic_and_one_reaches_the_actor_and_predictor(monkeypatch):
    """--shift-copies 2: the critic's TD and consistency terms see all 2B rows; the actor and the
    attribution predictor read the first copy's B rows."""
    rows = {}

    def record(name, fn):
        def wrapped(agent, obs, *a, **k):
            rows[name] = len(obs)
            return fn(agent, obs, *a, **k)

        return wrapped

    for name in ("update_critic", "update_actor_and_alpha", "update_aux", "masked_observation"):
        monkeypatch.setattr(sgqn, name, record(name, getattr(sgqn, name)))
    torch.manual_seed(0)
    agent = sgqn.make_agent((9, 32, 32), 2, tiny_args(), "cpu")
    batch = (
        torch.rand(8, 9, 32, 32) * 255,
        torch.rand(8, 2),
        torch.rand(8, 1),
        torch.rand(8, 9, 32, 32) * 255,
        torch.ones(8, 1),
    )
    sgqn.update(agent, batch, 0, tiny_args(shift_copies=2), -2.0, torch.rand(8, 3, 32, 32) * 255)
    assert rows == {"update_critic": 16, "masked_observation": 16, "update_actor_and_alpha": 8, "update_aux": 8}


def test_returned_losses_hold_no_graph():
    torch.manual_seed(0)
    args = tiny_args()
    agent = sgqn.make_agent((9, 32, 32), 2, args, "cpu")
    batch = (
        torch.rand(8, 9, 32, 32) * 255,
        torch.rand(8, 2),
        torch.rand(8, 1),
        torch.rand(8, 9, 32, 32) * 255,
        torch.ones(8, 1),
    )
    metrics = sgqn.update(agent, batch, 0, args, -2.0, torch.rand(8, 3, 32, 32) * 255)  # every part runs at step 0
    assert {"losses/actor_loss", "losses/alpha_loss", "losses/aux_loss", "losses/consistency_loss"} <= metrics.keys()
    assert all(not value.requires_grad and value.grad_fn is None for value in metrics.values())


def test_compile_and_memory_layout_keep_the_maths():
    """--compile (guided backprop's hooks included) and --no-channels-last give the default's
    losses, consistency and aux terms included, over a few updates."""

    def losses(**flags):
        torch.manual_seed(0)
        args = tiny_args(**flags)
        agent = sgqn.make_agent((9, 32, 32), 2, args, "cpu")
        gen = torch.Generator().manual_seed(1)
        out = []
        for step in range(3):
            batch = (
                torch.rand(8, 9, 32, 32, generator=gen) * 255,
                torch.rand(8, 2, generator=gen) * 2 - 1,
                torch.rand(8, 1, generator=gen),
                torch.rand(8, 9, 32, 32, generator=gen) * 255,
                torch.ones(8, 1),
            )
            metrics = sgqn.update(agent, batch, step, args, -2.0, torch.rand(8, 3, 32, 32, generator=gen) * 255)
            out += [metrics[k].item() for k in ("losses/qf1_loss", "losses/consistency_loss")]
            out += [metrics["losses/aux_loss"].item()] if step % 2 == 0 else []
        return out

    default = losses()
    np.testing.assert_allclose(losses(channels_last=False), default, rtol=1e-4)
    np.testing.assert_allclose(losses(compile=True), default, rtol=1e-4)


def test_aux_step_trains_decoder_and_encoder_but_not_heads():
    torch.manual_seed(0)
    args = tiny_args()
    agent = sgqn.make_agent((9, 32, 32), 2, args, "cpu")
    before = {k: v.clone() for k, v in agent.critic.state_dict().items()}
    decoder_before = [p.clone() for p in agent.decoder.parameters()]
    sgqn.update_aux(agent, torch.rand(8, 9, 32, 32) * 255, torch.rand(8, 2), torch.rand(8, 3, 32, 32) * 255, args)
    after = agent.critic.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("q1.", "q2.")))
    assert not torch.equal(before["conv.convs.0.weight"], after["conv.convs.0.weight"])
    assert not torch.equal(before["projection.0.weight"], after["projection.0.weight"])
    assert not all(torch.equal(a, b) for a, b in zip(decoder_before, agent.decoder.parameters()))
    assert agent.critic_optimizer.param_groups[0]["weight_decay"] == 1e-5


# ------------------------------------------------------------------------- equivalence and e2e
@pytest.mark.parametrize("shift_copies", [1, 2])
def test_without_its_two_terms_sgqn_trains_exactly_like_sac_with_shift(toy_envs, shift_copies):
    """Same losses, same networks, and the same evaluation episodes (paired: the same seed gives both
    scripts the same eval envs; SGQN's saliency pictures take no extra reset of them); with DrQ's
    K = M = 2 too."""
    common = dict(
        TINY,
        env_id="toy-reach_distract",
        seed=3,
        total_timesteps=160,
        learning_starts=60,
        eval_freq=80,
        eval_episodes=2,
        eval_modes=("train", "video_hard"),
        log_freq=1,
        buffer_size=500,
        shift_copies=shift_copies,
    )
    sac_dir = sac.main(sac.Args(**common, augmentation="shift"))
    sgqn_dir = sgqn.main(sgqn.Args(**common, consistency_weight=0.0, aux_update_freq=0, critic_weight_decay=0.0))
    sac_scalars, sgqn_scalars = read_scalars(sac_dir), read_scalars(sgqn_dir)
    for tag in ("losses/qf1_loss", "losses/qf2_loss", "losses/actor_loss", "losses/alpha_loss"):
        assert len(sac_scalars[tag]) >= 50 and sac_scalars[tag] == sgqn_scalars[tag], tag
    sac_evaluations, sgqn_evaluations = (read_evaluations(d) for d in (sac_dir, sgqn_dir))
    assert len(sac_evaluations) == 2 * 2 * 2 and sac_evaluations == sgqn_evaluations
    assert len({row[-1] for row in sac_evaluations}) > 4  # real, different episodes
    sac_state = torch.load(os.path.join(sac_dir, "checkpoint.pt"), weights_only=False)["agent"]
    sgqn_state = torch.load(os.path.join(sgqn_dir, "checkpoint.pt"), weights_only=False)["agent"]
    for part in ("actor", "critic", "critic_target"):
        for key, value in sac_state[part].items():
            assert torch.equal(value, sgqn_state[part][key]), (part, key)
    # And with its terms on, it does not.
    other = sgqn.main(sgqn.Args(**common))
    assert read_scalars(other)["losses/qf1_loss"] != sac_scalars["losses/qf1_loss"]
    assert read_evaluations(other) != sac_evaluations


def test_bf16_burst_trains_the_current_weights(toy_envs):
    """As in test_sac_baseline: the first-updates burst in bf16 (critic, actor and aux steps in one
    autocast context, no weight cache) must end near the same burst in fp32."""

    def critic_after_burst(bf16):
        run_dir = sgqn.main(
            tiny_args(
                env_id="toy-reach_distract",
                seed=2,
                learning_starts=100,
                total_timesteps=101,
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
    # Relative distance of the critic's weights: 0.04 measured; 1.1 with autocast's weight cache on.
    assert 0 < (bf16 - fp32).norm() / fp32.norm() < 0.3


def read_evaluations(run_dir):
    with open(os.path.join(run_dir, "evaluations.csv")) as f:
        return [tuple(line.strip().split(",")) for line in f][1:]


def test_sgqn_end_to_end_logs_saliency_checkpoints_and_resumes(toy_envs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = tiny_args(
        env_id="toy-reach_distract",
        total_timesteps=120,
        learning_starts=60,
        eval_freq=60,
        eval_episodes=1,
        eval_modes=("train", "video_hard"),
        save_freq=60,
        log_freq=10,
        buffer_size=500,
        capture_video=True,
        save_buffer=True,
    )
    run_dir = sgqn.main(args)
    scalars = read_scalars(run_dir)
    for tag in (
        "losses/consistency_loss",
        "losses/aux_loss",
        "saliency/mask_iou",
        "saliency/mask_balanced_accuracy",
        "losses/qf1_loss",
        "losses/qf1_spread",
        "losses/actor_loss",
        "eval/video_hard/episodic_return",
    ):
        assert tag in scalars, tag
    acc = EventAccumulator(run_dir, size_guidance={"images": 0})
    acc.Reload()
    images = acc.Images("saliency/obs_heat_mask_predicted")
    assert [i.step for i in images] == [60, 120] and images[0].width == 4 * 32 and images[0].height == 2 * 32
    videos = sorted(os.listdir(os.path.join(run_dir, "videos")))
    assert videos == ["train_step120.mp4", "train_step60.mp4", "video_hard_step120.mp4", "video_hard_step60.mp4"]
    import imageio.v2 as imageio

    frame = imageio.get_reader(os.path.join(run_dir, "videos", videos[0])).get_data(0)
    assert frame.shape[:2] == (4 * 32, 4 * 64)  # frame | saliency overlay, upscaled x4

    checkpoint = os.path.join(run_dir, "checkpoint.pt")
    assert set(torch.load(checkpoint, weights_only=False)["agent"]) >= {"decoder", "aux_optimizer"}
    assert sgqn.main(tiny_args(resume=checkpoint, total_timesteps=140)) == run_dir
    assert max(s for s, _ in read_scalars(run_dir)["losses/aux_loss"]) == 140
    with pytest.raises(sgqn.envs.ConfigError, match="written by sgqn.py, not sac_baseline.py"):
        sac.main(sac.Args(**TINY, env_id="toy-reach_distract", eval_checkpoint=checkpoint, eval_modes=("train",)))


# ------------------------------------------------------------------------------------ learning
def test_saliency_concentrates_on_the_task_relevant_pixels():
    """The point of the method: after SGQN's updates on transitions among moving distractors, the
    critic's mask lies on the agent and the target far more than a mask placed by chance would.
    (Acting and the loop are covered end to end above; here the data is fixed, random-policy.)"""
    torch.manual_seed(0)
    args = tiny_args(num_filters=16, projection_dim=32, hidden_dim=128, batch_size=32, sgqn_quantile=0.95)
    agent = sgqn.make_agent((9, 32, 32), 2, args, "cpu")
    env, rng = toy_task.make_toy_env("toy-reach_distract", 0), np.random.default_rng(0)
    buffer = sgqn.ReplayBuffer(4000, (3, 32, 32), 2, 3, "cpu", 0)
    obs, _ = env.reset()
    buffer.add_first(obs[-3:])
    for _ in range(3000):
        action = rng.uniform(-1, 1, 2).astype(np.float32)
        obs, reward, terminated, truncated, _ = env.step(action)
        buffer.add(obs[-3:], action, reward, terminated)
        if truncated:
            obs, _ = env.reset()
            buffer.add_first(obs[-3:])
    overlay = sgqn.envs.OverlayImages(None, 32, 0)
    for step in range(1200):
        images = torch.as_tensor(overlay.sample(32)).float() if step % 2 == 0 else None
        sgqn.update(agent, buffer.sample(32), step, args, -2.0, images)

    test_env, observations = toy_task.make_toy_env("toy-reach_distract", 123), []
    for _ in range(4):
        obs, _ = test_env.reset()
        for _ in range(16):
            observations.append(obs := test_env.step(rng.uniform(-1, 1, 2))[0])
    obs = torch.as_tensor(np.stack(observations)).float()
    with torch.no_grad():
        action = torch.tanh(agent.actor(agent.critic.conv(obs))[0])
    mask = sgqn.saliency_mask(sgqn.guided_backprop(agent.critic, obs, action), args.sgqn_quantile)
    relevant = toy_task.relevant_pixels(obs)
    precision = (mask & relevant).sum().item() / mask.sum().item()
    chance = relevant.float().mean().item()
    print(f"mask on agent+target: {precision:.3f}, chance {chance:.3f}, ratio {precision / chance:.1f}")
    assert precision > 5 * chance
