"""SGQN: saliency-guided Q-networks for visual RL that generalizes (Bertoin et al., NeurIPS 2022).

"Look where you look! Saliency-guided Q-networks for generalization in visual reinforcement
learning", https://arxiv.org/abs/2209.09203. SGQN is SAC from pixels with DrQ's random shift plus
two terms that make the critic look at the pixels that matter (paper, section 4):
  1. consistency: Q(obs, a) must not change when every pixel outside the critic's saliency mask is
     greyed out (`consistency_loss`, paper eq. 2), so the critic's value rests on salient pixels;
  2. attribution prediction: a decoder on the critic's features must predict that mask from an
     image-overlaid observation (`update_aux`, paper eq. 3), so the encoder keeps the salient
     structure under distraction.
The saliency map is guided backpropagation of Q1 (`guided_backprop`), thresholded per frame at a
quantile (`saliency_mask`).

    python sgqn.py --env-id cheetah-run
    python sgqn.py --env-id walker-walk --video-hard-dir data/video_hard --overlay-dir data/places365
    python sgqn.py --eval-checkpoint runs/<run>/checkpoint.pt
    python sgqn.py --resume runs/<run>/checkpoint.pt
    tensorboard --logdir runs

A run writes runs/<run>/: args.json, evaluations.csv (a row per evaluation episode), checkpoint.pt,
TensorBoard events, summary.json (at the end, and when interrupted). Ctrl-C (SIGINT), SIGTERM or
SIGUSR1 write the checkpoint, print the resume command and exit with 128 + the signal's number:
130, 143, 138.

The network, buffer, augmentation, actor update, evaluation and checkpoint code is repeated, line
for line, from sac_baseline.py (tests/test_shared_code.py holds the two files together); with
`--consistency-weight 0 --aux-update-freq 0 --critic-weight-decay 0` this file trains exactly like
`sac_baseline.py --augmentation shift`.
"""

import collections
import contextlib
import csv
import ctypes
import dataclasses
import functools
import json
import math
import os
import random
import signal
import sys
import threading
import time
import types
from dataclasses import dataclass
from typing import Literal, Optional

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter

import envs


@dataclass
class Args:
    exp_name: str = "sgqn"
    """name of this experiment (part of the run folder's name)"""
    env_id: str = "walker-walk"
    """DMC task as `domain-task`, e.g. cheetah-run, walker-walk, ball_in_cup-catch"""
    seed: int = 1
    """seed of the experiment (networks, buffer sampling, environments)"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, use CUDA when it is available"""
    capture_video: bool = False
    """if toggled, write an mp4 of one evaluation episode per mode, saliency beside the frame, to `runs/{run}/videos`"""

    # Algorithm (SPEC section 3; DMC-GB's defaults)
    total_timesteps: int = 500_000
    """agent steps to train for (frames = steps x action repeat)"""
    buffer_size: int = 500_000
    """replay capacity in frames (one frame per step, plus one per episode start)"""
    learning_starts: int = 1000
    """agent steps of uniformly random actions before the first update"""
    batch_size: int = 128
    """minibatch size of each update"""
    gamma: float = 0.99
    """discount factor"""
    augmentation: Literal["none", "shift"] = "shift"
    """random shift (pad 4, replicate) of obs and next_obs, as DrQ; `none` only for ablations"""
    shift_copies: int = 1
    """with --augmentation shift: copies of each sampled transition, each with its own shifts, and each transition's TD target averaged over its copies (DrQ's K = M, Kostrikov et al. 2021, eq. 3); 1 as DMC-GB, 2 as the DrQ paper"""
    critic_lr: float = 1e-3
    """critic learning rate (Adam, beta1 0.9)"""
    actor_lr: float = 1e-3
    """actor learning rate (Adam, beta1 0.9)"""
    alpha_lr: float = 1e-4
    """temperature learning rate (Adam, beta1 0.5)"""
    init_temperature: float = 0.1
    """initial entropy temperature alpha"""
    actor_update_freq: int = 2
    """update the actor and temperature every N steps"""
    target_update_freq: int = 2
    """soft-update the target critic every N steps"""
    critic_weight_decay: float = 1e-5
    """critic L2 weight decay (Adam's weight_decay; paper's Table 3)"""
    critic_tau: float = 0.01
    """soft-update rate of the target Q heads"""
    encoder_tau: float = 0.05
    """soft-update rate of the target conv stack and projection"""

    # SGQN (paper section 4 and Table 3)
    sgqn_quantile: Optional[float] = None
    """saliency quantile rho: keep the top (1 - rho) pixels per frame (default: 0.95 for walker, finger, cheetah; 0.98 otherwise)"""
    consistency_weight: float = 0.5
    """weight of the consistency term in the critic loss (0 turns it off)"""
    aux_update_freq: int = 2
    """train the attribution predictor every N steps (0 turns it off)"""
    aux_lr: float = 3e-4
    """learning rate of the attribution predictor's Adam (decoder + critic conv stack and projection)"""
    overlay_dir: Optional[str] = None
    """folder of jpg/png images (e.g. Places365) overlaid on obs for the attribution loss; procedural if unset"""

    # Architecture (defaults are the paper's; smaller values are for tests and laptops)
    num_conv_layers: int = 11
    """conv layers of the shared encoder (first stride 2, then stride 1)"""
    num_filters: int = 32
    """filters per conv layer"""
    projection_dim: int = 100
    """width of the actor's and the critic's Linear-LayerNorm-tanh projection"""
    hidden_dim: int = 1024
    """width of the actor and Q-head MLPs"""

    # Environment
    action_repeat: Optional[int] = None
    """physics steps per agent step (default: cartpole 8, finger 2, else 4)"""
    image_size: int = 84
    """rendered frame size in pixels"""
    frame_stack: int = 3
    """frames stacked into one observation"""

    # Evaluation
    eval_freq: int = 10_000
    """evaluate every N agent steps (and at the end)"""
    eval_episodes: int = 10
    """episodes per mode and evaluation (DMC-GB reports 30: use that with --eval-checkpoint)"""
    eval_modes: tuple[str, ...] = envs.MODES
    """modes to evaluate on: any of train color_easy color_hard video_easy video_hard distracting_cs_easy distracting_cs_medium distracting_cs_hard"""
    video_easy_dir: Optional[str] = None
    """folder of background videos for video_easy (e.g. DMC-GB's video_easy); procedural if unset"""
    video_hard_dir: Optional[str] = None
    """folder of background videos for video_hard (e.g. DMC-GB's video_hard); procedural if unset"""
    davis_dir: Optional[str] = None
    """DAVIS 2017 folder (<dir>/JPEGImages/480p/<sequence>/*.jpg) for the distracting_cs modes; procedural videos if unset"""
    eval_checkpoint: Optional[str] = None
    """no training: evaluate this checkpoint (its env and architecture) on --eval-modes, print mean +- std per mode"""
    eval_csv: Optional[str] = None
    """with --eval-checkpoint: write a row per episode here (default: eval_checkpoint_step{N}.csv beside the checkpoint)"""

    # Speed (figures in the README's "Speed" section)
    channels_last: bool = True
    """keep conv weights and activations channels-last (NHWC): the same maths in a faster memory layout (--no-channels-last for NCHW)"""
    bf16: bool = False
    """run the networks under bfloat16 autocast when updating and acting: activations and matmul inputs lose precision (8 bits of mantissa); weights, losses and optimiser state stay fp32. For SGQN, not advised: with the 4 x 16 preset its encoder collapsed in the first updates on 2 of 3 seeds in bf16, none in fp32 (README, "The results study")"""
    compile: bool = False
    """torch.compile the conv stacks, projections, heads, actor and decoder (each separately, as the updates call them): the same maths with fused elementwise ops; the first updates compile (about a minute on 2 CPU cores)"""

    # Run folder, logging and checkpoints
    run_name: Optional[str] = None
    """name of the run folder (default `{env_id}__{exp_name}__{seed}__{unix_time}`); launchers give stable names"""
    runs_dir: str = "runs"
    """parent folder of the run folders"""
    log_freq: int = 100
    """write training scalars to TensorBoard every N steps"""
    console_freq: int = 1000
    """print a progress line every N steps (and at least every 25 s while training)"""
    save_freq: int = 50_000
    """write `runs/{run}/checkpoint.pt` every N steps (and at the end, and when interrupted)"""
    save_buffer: bool = False
    """also store the replay buffer in checkpoints (large: ~21 KB per frame)"""
    keep_checkpoints: bool = False
    """also keep each periodic checkpoint as `checkpoint_step{N}.pt` beside `checkpoint.pt` (networks only, no buffer)"""
    resume: Optional[str] = None
    """continue the run of this checkpoint, with its args: only the evaluation, logging, checkpoint, folder and device flags may change"""


# ---------------------------------------------------------------------------------------------
# Networks (DMC-GB's SharedCNN + RLProjection + SAC heads)
# ---------------------------------------------------------------------------------------------
LOG_STD_MIN, LOG_STD_MAX = -10.0, 2.0


def weight_init(module):
    """Orthogonal Linear layers; delta-orthogonal convs: zero kernels except an orthogonal centre
    tap with ReLU gain, so that each conv starts as a 1x1 orthogonal map (DMC-GB's init)."""
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        nn.init.zeros_(module.weight)
        nn.init.zeros_(module.bias)
        centre = module.weight.shape[2] // 2
        nn.init.orthogonal_(module.weight[:, :, centre, centre], nn.init.calculate_gain("relu"))


class ConvStack(nn.Module):
    """Pixels / 255 -> 3x3 convs (first stride 2, no padding), ReLU between them, none after the
    last -> flattened features (32 x 21 x 21 = 14112 at 84x84). Owned and trained by the critic."""

    def __init__(self, obs_shape, num_layers, num_filters):
        super().__init__()
        layers = [nn.Conv2d(obs_shape[0], num_filters, 3, stride=2)]
        for _ in range(num_layers - 1):
            layers += [nn.ReLU(), nn.Conv2d(num_filters, num_filters, 3, stride=1)]
        self.convs = nn.Sequential(*layers)
        self.out_shape = (num_filters, *conv_output_size(obs_shape[1:], num_layers))
        self.out_dim = math.prod(self.out_shape)

    def forward(self, obs):
        return self.convs(obs / 255.0).flatten(1)


def conv_output_size(hw, num_layers):
    """Spatial size after the stack: (84 - 3) // 2 + 1 = 41, then -2 per stride-1 conv -> 21."""
    return tuple((s - 3) // 2 + 1 - 2 * (num_layers - 1) for s in hw)


def projection(in_dim, out_dim):
    """Linear -> LayerNorm -> tanh: the actor and the critic each have their own."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), nn.Tanh())


def mlp(in_dim, hidden_dim, out_dim):
    return nn.Sequential(
        nn.Linear(in_dim, hidden_dim), nn.ReLU(),
        nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
        nn.Linear(hidden_dim, out_dim),
    )


class Critic(nn.Module):
    """Clipped double Q: conv stack -> projection -> two heads on [features, action]."""

    def __init__(self, obs_shape, action_dim, num_conv_layers, num_filters, projection_dim, hidden_dim):
        super().__init__()
        self.conv = ConvStack(obs_shape, num_conv_layers, num_filters)
        self.projection = projection(self.conv.out_dim, projection_dim)
        self.q1 = mlp(projection_dim + action_dim, hidden_dim, 1)
        self.q2 = mlp(projection_dim + action_dim, hidden_dim, 1)
        self.apply(weight_init)

    def forward(self, obs, action):
        return self.heads(self.conv(obs), action)

    def heads(self, conv_features, action):
        """Q1, Q2 from conv features, so that a conv pass can be shared between callers."""
        h = torch.cat([self.projection(conv_features), action], dim=-1)
        return self.q1(h), self.q2(h)


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy on the critic's conv features (read detached: the actor's
    loss trains its own projection and MLP, never the conv stack)."""

    def __init__(self, conv_dim, action_dim, projection_dim, hidden_dim):
        super().__init__()
        self.projection = projection(conv_dim, projection_dim)
        self.mlp = mlp(projection_dim, hidden_dim, 2 * action_dim)
        self.apply(weight_init)

    def forward(self, conv_features):
        """Mean and log-std of the pre-tanh Gaussian; log-std squashed into [-10, 2]. Always fp32:
        under --bf16 the tanh squash and its log-determinant would lose the actions near +-1."""
        mean, log_std = self.mlp(self.projection(conv_features)).float().chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        return mean, log_std

    def sample(self, conv_features):
        """Reparameterised action in (-1, 1) and its log-probability (B, 1)."""
        mean, log_std = self(conv_features)
        noise = torch.randn_like(mean)
        action = torch.tanh(mean + noise * log_std.exp())
        return action, squashed_gaussian_log_prob(noise, log_std, action)


def squashed_gaussian_log_prob(noise, log_std, action):
    """log N(u; mean, std) - sum log(1 - tanh(u)^2), with u = mean + std * noise (SAC, App. C);
    the relu and 1e-6 keep the log finite where tanh saturates (as DMC-GB)."""
    log_prob = (-0.5 * noise.pow(2) - log_std).sum(-1, keepdim=True) - 0.5 * math.log(2 * math.pi) * noise.shape[-1]
    return log_prob - torch.log(F.relu(1 - action.pow(2)) + 1e-6).sum(-1, keepdim=True)


# ---------------------------------------------------------------------------------------------
# Replay buffer: each rendered frame stored once, stacks rebuilt when sampling
# ---------------------------------------------------------------------------------------------
class ReplayBuffer:
    """A ring of frames. Slot i holds one frame and, unless it is an episode's first frame, the
    transition that produced it (action, reward, not_done). `episode_step[i]` counts frames since
    the episode's first, so stacks never reach into the previous episode: at an episode start the
    first frame repeats, exactly as the env's frame stack does."""

    def __init__(self, capacity, frame_shape, action_dim, frame_stack, device, seed):
        self.capacity, self.frame_stack, self.device = capacity, frame_stack, device
        self.frames = np.zeros((capacity, *frame_shape), dtype=np.uint8)
        self.actions = np.zeros((capacity, action_dim), dtype=np.float32)
        self.rewards = np.zeros((capacity, 1), dtype=np.float32)
        self.not_dones = np.zeros((capacity, 1), dtype=np.float32)
        self.episode_step = np.zeros(capacity, dtype=np.int64)
        self.cursor, self.full = 0, False
        self.rng = np.random.default_rng(seed)
        # Newest-last offsets of the frames of one stack: (frame_stack-1, ..., 1, 0) frames back.
        self.back = np.arange(frame_stack - 1, -1, -1)

    @property
    def bytes_per_frame(self):
        return sum(a[0].nbytes for a in (self.frames, self.actions, self.rewards, self.not_dones, self.episode_step))

    def __len__(self):
        return self.capacity if self.full else self.cursor

    def add_first(self, frame):
        """The first frame of an episode (from reset): no transition leads to it."""
        self._write(frame, np.zeros(self.actions.shape[1]), 0.0, False, 0)

    def add(self, frame, action, reward, terminated):
        """The newest frame after a step, with the step's action and reward. A time-limit
        truncation is not a terminal state, so it keeps not_done = 1 and bootstraps."""
        self._write(frame, action, reward, terminated, self.episode_step[self.cursor - 1] + 1)

    def _write(self, frame, action, reward, terminated, episode_step):
        i = self.cursor
        self.frames[i], self.actions[i], self.rewards[i] = frame, action, reward
        self.not_dones[i], self.episode_step[i] = 1.0 - float(terminated), episode_step
        self.cursor = (i + 1) % self.capacity
        self.full = self.full or self.cursor == 0

    def _valid(self, idx):
        """A slot is a transition unless it holds an episode's first frame or, once the ring has
        wrapped, it is among the oldest frame_stack slots, whose stacks reach overwritten frames."""
        valid = self.episode_step[idx] > 0
        if self.full:
            valid &= (idx - self.cursor) % self.capacity >= self.frame_stack
        return valid

    def _stacks(self, idx, episode_step):
        """(B, 3*frame_stack, H, W): frames idx-k for k = frame_stack-1..0, clamped to the
        episode's first frame (k <= episode_step)."""
        frame_idx = (idx[:, None] - np.minimum(self.back[None, :], episode_step[:, None])) % self.capacity
        stacks = self.frames[frame_idx]  # (B, frame_stack, 3, H, W)
        return stacks.reshape(len(idx), -1, *stacks.shape[3:])

    def sample(self, batch_size):
        """Uniform over stored transitions: draw slots, redraw the few that are not transitions."""
        idx = self.rng.integers(0, len(self), batch_size)
        while not (valid := self._valid(idx)).all():
            idx[~valid] = self.rng.integers(0, len(self), int((~valid).sum()))
        step = self.episode_step[idx]
        obs = self._stacks((idx - 1) % self.capacity, step - 1)
        next_obs = self._stacks(idx, step)
        to_device = lambda x: torch.as_tensor(x, device=self.device)
        return (to_device(obs).float(), to_device(self.actions[idx]), to_device(self.rewards[idx]),
                to_device(next_obs).float(), to_device(self.not_dones[idx]))

    def state_dict(self):
        n = len(self)
        arrays = {k: getattr(self, k)[:n] for k in ("frames", "actions", "rewards", "not_dones", "episode_step")}
        return {**arrays, "cursor": self.cursor, "full": self.full, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state):
        for k in ("frames", "actions", "rewards", "not_dones", "episode_step"):
            getattr(self, k)[: len(state[k])] = state[k]
        self.cursor, self.full = state["cursor"], state["full"]
        self.rng.bit_generator.state = state["rng"]


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------
def random_shift(obs, pad=4):
    """DrQ's random shift (Kostrikov et al. 2021): replicate-pad by `pad`, then crop back to the
    original size at an independent random integer offset per sample. Replicate padding is the
    same as clamping the source index, so the crop is two batched gathers on the device."""
    n, c, h, w = obs.shape
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n, 1, 1, 1), device=obs.device) - pad
    rows = (torch.arange(h, device=obs.device)[:, None] + dy).clamp(0, h - 1)  # (n, 1, h, 1)
    cols = (torch.arange(w, device=obs.device) + dx).clamp(0, w - 1)  # (n, 1, 1, w)
    return obs.gather(2, rows.expand(n, c, h, w)).gather(3, cols.expand(n, c, h, w))


def shifted_copies(batch, copies):
    """DrQ's augmentation of a sampled batch (Kostrikov et al. 2021, eq. 3, K = M = copies): the
    batch `copies` times over, copy after copy (transition i of copy c is row c * B + i), each row
    with its own shifts of obs and next_obs. The critic's loss is then the mean over all rows (DrQ
    sums its copies' losses: a constant factor, which Adam's steps do not see)."""
    repeat = lambda x: x.repeat(copies, *[1] * (x.dim() - 1)) if copies > 1 else x
    obs, action, reward, next_obs, not_done = map(repeat, batch)
    return random_shift(obs), action, reward, random_shift(next_obs), not_done


def random_overlay(obs, images):
    """0.5 * obs + 0.5 * image, in pixel units, with the same image over a sample's stacked
    frames (Hansen & Wang 2021): the distraction the attribution predictor must see through."""
    frames = obs.shape[1] // 3
    return 0.5 * obs + 0.5 * images.repeat(1, frames, 1, 1)


# ---------------------------------------------------------------------------------------------
# Saliency and the SGQN losses (paper section 4)
# ---------------------------------------------------------------------------------------------
def guided_backprop(critic, obs, action, keep_q=False):
    """Guided backpropagation (Springenberg et al. 2015) of Q1(obs, a) with respect to obs: the
    plain gradient, except that at every ReLU the backward signal is also clamped at zero, so only
    evidence that increases Q flows back. No parameter gets a gradient (autograd.grad asks for the
    obs gradient only). With keep_q it also returns (Q1, Q2) of the same forward pass, graph kept,
    for the critic loss (the original runs that forward pass again): the clamp is switched off
    once the attribution is taken, so a later backward through them is the plain gradient."""
    clamping = True

    def clamp_backward(module, grad_input, grad_output):
        return (grad_input[0].clamp(min=0),) if clamping else None

    hooks = [m.register_full_backward_hook(clamp_backward) for m in critic.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.enable_grad():
            obs = obs.detach().requires_grad_(True)
            features = torch.cat([critic.projection(critic.conv(obs)), action], dim=-1)
            q1, q2 = critic.q1(features), critic.q2(features) if keep_q else None
            (attribution,) = torch.autograd.grad(q1.sum(), obs, retain_graph=keep_q)
    finally:
        clamping = False
        for hook in hooks:
            hook.remove()
    return (attribution, (q1, q2)) if keep_q else attribution


def saliency_mask(attribution, quantile):
    """Per stacked frame: |attribution| max over its colour channels, kept where it reaches the
    sample's `quantile` over that frame's pixels (so about 1 - quantile of them), repeated over the
    frame's channels. Bool, same shape as obs (paper section 4.1, "M(s, a)")."""
    b, c, h, w = attribution.shape
    per_frame = attribution.abs().view(b, c // 3, 3, h, w).amax(dim=2)  # (B, frames, H, W)
    # torch.quantile's linear interpolation between two order statistics, found by selection:
    # torch.quantile sorts every row, 3x slower at 84x84.
    position = quantile * (h * w - 1)
    below, above = (per_frame.flatten(2).kthvalue(k + 1, dim=-1).values for k in (math.floor(position), math.ceil(position)))
    threshold = torch.lerp(below, above, position - math.floor(position))  # (B, frames)
    mask = per_frame >= threshold[..., None, None]
    return mask.repeat_interleave(3, dim=1)


def masked_observation(obs, mask):
    """Salient pixels kept; every other pixel set to one grey level drawn uniformly between the
    batch's min and max pixel value (one draw per update, as the original code; drawn on the
    device, so no host sync)."""
    low, high = obs.amin(), obs.amax()
    grey = low + torch.rand((), device=obs.device) * (high - low)
    return torch.where(mask, obs, grey)


def consistency_loss(q, q_masked):
    """MSE(Q1(s,a), Q1(s_masked,a)) + MSE(Q2(s,a), Q2(s_masked,a)), gradients through both sides
    (paper eq. 2): the value must not depend on the pixels outside the saliency mask."""
    return F.mse_loss(q[0], q_masked[0]) + F.mse_loss(q[1], q_masked[1])


def upsample_conv(x, conv):
    """conv(2x nearest upsample of x) (3x3 conv, padding 1) without forming the upsampled image:
    each output pixel then reads a 2x2 block of x, so the 3x3 taps fold into a 4x4 stride-2
    transposed-conv kernel (per axis, taps w0 w1 w2 become w2, w1+w2, w0+w1, w0). The same maths
    in 2.25x fewer multiply-adds; tests/test_sgqn.py checks it against the two-step version."""
    fold = x.new_tensor([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]])  # (4x4 kernel tap, 3x3 tap)
    kernel = torch.einsum("ak,bl,oikl->ioab", fold, fold, conv.weight)
    return F.conv_transpose2d(x, kernel, conv.bias, stride=2, padding=1)


class AttributionDecoder(nn.Module):
    """Predicts the saliency mask (logits, one per obs pixel) from the critic's projected
    features and the action (paper section 4.2; the original's AttributionDecoder: linear, then
    relu-conv, upsample x2, relu-conv, upsample to the obs size, relu-conv). Widths are 4x and 2x
    the encoder's filters: 128 and 64 at the paper's 32, smaller for small encoders. At 84x84 both
    upsamplings are x2 (21 -> 42 -> 84) and run folded into the convs after them (upsample_conv;
    ReLU commutes with nearest upsampling); other obs sizes upsample to the obs size first."""

    def __init__(self, conv_out_shape, obs_shape, projection_dim, action_dim):
        super().__init__()
        self.conv_out_shape, self.obs_hw = conv_out_shape, tuple(obs_shape[1:])
        filters = conv_out_shape[0]
        self.linear = nn.Linear(projection_dim + action_dim, math.prod(conv_out_shape))
        self.conv1 = nn.Conv2d(filters, 4 * filters, 3, padding=1)
        self.conv2 = nn.Conv2d(4 * filters, 2 * filters, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * filters, obs_shape[0], 3, padding=1)

    def forward(self, features, action):
        x = F.relu(self.linear(torch.cat([features, action], dim=-1))).view(-1, *self.conv_out_shape)
        x = F.relu(upsample_conv(F.relu(self.conv1(x)), self.conv2))
        if tuple(2 * n for n in x.shape[-2:]) == self.obs_hw:
            return upsample_conv(x, self.conv3)
        return self.conv3(F.interpolate(x, size=self.obs_hw))


def domain_quantile(env_id):
    """Paper's Table 3: large agents (walker, finger, cheetah) keep 5% of the pixels, others 2%."""
    return 0.95 if env_id.split("-")[0] in ("walker", "finger", "cheetah") else 0.98


def check_sgqn_args(args):
    """SGQN's own flags, checked with the others before anything slow starts (one-line ConfigError)."""
    if args.sgqn_quantile is not None and not 0 < args.sgqn_quantile < 1:
        raise envs.ConfigError(f"--sgqn-quantile {args.sgqn_quantile}: must be between 0 and 1")
    for name in ("consistency_weight", "aux_update_freq", "critic_weight_decay"):
        if getattr(args, name) < 0:
            raise envs.ConfigError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be 0 or more")
    if args.overlay_dir and not os.path.isdir(args.overlay_dir):
        raise envs.ConfigError(f"--overlay-dir {args.overlay_dir}: no such folder")


# ---------------------------------------------------------------------------------------------
# Updates
# ---------------------------------------------------------------------------------------------
@dataclass
class Agent:
    """The learned parts and their optimisers (a plain holder: checkpoints iterate its fields)."""

    actor: Actor
    critic: Critic
    critic_target: Critic
    log_alpha: torch.Tensor
    actor_optimizer: torch.optim.Optimizer
    critic_optimizer: torch.optim.Optimizer
    alpha_optimizer: torch.optim.Optimizer
    decoder: Optional[AttributionDecoder]  # None when the attribution loss is off
    aux_optimizer: Optional[torch.optim.Optimizer]


def make_agent(obs_shape, action_dim, args, device):
    critic = Critic(obs_shape, action_dim, args.num_conv_layers, args.num_filters, args.projection_dim, args.hidden_dim).to(device)
    actor = Actor(critic.conv.out_dim, action_dim, args.projection_dim, args.hidden_dim).to(device)
    critic_target = Critic(obs_shape, action_dim, args.num_conv_layers, args.num_filters, args.projection_dim, args.hidden_dim).to(device)
    critic_target.load_state_dict(critic.state_dict())
    critic_target.requires_grad_(False)
    if args.channels_last:
        for net in (critic, critic_target):
            net.to(memory_format=torch.channels_last)
    if args.compile:  # each part on its own: the updates call the conv stack, projection and heads separately
        for part in (*critic.children(), *critic_target.children(), actor):
            part.compile()
    log_alpha = torch.tensor(math.log(args.init_temperature), device=device, requires_grad=True)
    # Built last, and only when used, so that the networks above start as in sac_baseline.py.
    decoder = AttributionDecoder(critic.conv.out_shape, obs_shape, args.projection_dim, action_dim).to(device) if args.aux_update_freq else None
    if decoder is not None and args.channels_last:
        decoder.to(memory_format=torch.channels_last)
    if decoder is not None and args.compile:
        decoder.compile()
    return Agent(
        actor=actor,
        critic=critic,
        critic_target=critic_target,
        log_alpha=log_alpha,
        actor_optimizer=torch.optim.Adam(actor.parameters(), lr=args.actor_lr, betas=(0.9, 0.999)),
        critic_optimizer=torch.optim.Adam(critic.parameters(), lr=args.critic_lr, betas=(0.9, 0.999), weight_decay=args.critic_weight_decay),
        alpha_optimizer=torch.optim.Adam([log_alpha], lr=args.alpha_lr, betas=(0.5, 0.999)),
        decoder=decoder,
        # A second optimiser over the critic's conv stack and projection, as the original.
        aux_optimizer=torch.optim.Adam([*decoder.parameters(), *critic.conv.parameters(), *critic.projection.parameters()],
                                       lr=args.aux_lr, betas=(0.9, 0.999)) if decoder else None,
    )


def td_target(agent, reward, next_obs, not_done, gamma, copies=1):
    """r + gamma * (min of the two target Qs - alpha log pi) at a fresh policy action (no grad).
    The policy reads the online conv stack; the Qs come from the target critic. With a batch of
    `copies` shifted copies (see shifted_copies), each transition's target is the mean over its
    copies' (DrQ's K, eq. 3), repeated for each copy."""
    with torch.no_grad():
        next_action, next_log_pi = agent.actor.sample(agent.critic.conv(next_obs))
        target_q1, target_q2 = agent.critic_target(next_obs, next_action)
        next_v = torch.min(target_q1, target_q2) - agent.log_alpha.exp() * next_log_pi
        target = reward + not_done * gamma * next_v
        return target.view(copies, -1, 1).mean(0).repeat(copies, 1)


def update_critic(agent, obs, action, reward, next_obs, not_done, args):
    """TD loss + consistency_weight x consistency (paper eq. 4). The mask comes from the critic as
    it is before this step; the attribution's forward pass also gives Q(obs) for both losses."""
    target_q = td_target(agent, reward, next_obs, not_done, args.gamma, args.shift_copies)
    metrics = {}
    if args.consistency_weight > 0:
        attribution, (q1, q2) = guided_backprop(agent.critic, obs, action, keep_q=True)
        q1_masked, q2_masked = agent.critic(masked_observation(obs, saliency_mask(attribution, args.sgqn_quantile)), action)
        consistency = args.consistency_weight * consistency_loss((q1, q2), (q1_masked, q2_masked))
        metrics["losses/consistency_loss"] = consistency.detach()
    else:
        (q1, q2), consistency = agent.critic(obs, action), 0.0
    qf1_loss, qf2_loss = F.mse_loss(q1, target_q), F.mse_loss(q2, target_q)
    agent.critic_optimizer.zero_grad()
    (qf1_loss + qf2_loss + consistency).backward()
    agent.critic_optimizer.step()
    return metrics | {"losses/qf1_loss": qf1_loss.detach(), "losses/qf2_loss": qf2_loss.detach(), "losses/qf1_values": q1.mean().detach()}


def update_aux(agent, obs, action, overlay_images, args):
    """Attribution prediction (paper eq. 3): BCE-with-logits between the decoder's prediction
    from the overlaid obs and the mask of the critic after this step's update, on the clean
    obs. Trains the decoder and the critic's conv stack and projection."""
    target_mask = saliency_mask(guided_backprop(agent.critic, obs, action), args.sgqn_quantile)
    features = agent.critic.projection(agent.critic.conv(random_overlay(obs, overlay_images)))
    logits = agent.decoder(features, action)
    aux_loss = F.binary_cross_entropy_with_logits(logits, target_mask.float())
    agent.aux_optimizer.zero_grad()
    aux_loss.backward()
    agent.aux_optimizer.step()
    return {"losses/aux_loss": aux_loss.detach(), **mask_metrics(logits.detach() > 0, target_mask)}


def mask_metrics(predicted, target):
    """How well the predicted mask (logit > 0) matches the critic's, over the batch (bool tensors in,
    scalar tensors out, no host sync). Only 2-5% of the pixels are salient, so plain accuracy would
    give an all-zero prediction 0.95-0.98; balanced accuracy (the mean of the recall of salient and
    of other pixels) gives it 0.5, precision, recall and IoU give it 0."""
    hits = (predicted & target).sum()
    recall = hits / target.sum().clamp(min=1)
    specificity = (~predicted & ~target).sum() / (~target).sum().clamp(min=1)
    return {"saliency/mask_balanced_accuracy": (recall + specificity) / 2,
            "saliency/mask_precision": hits / predicted.sum().clamp(min=1),
            "saliency/mask_recall": recall,
            "saliency/mask_iou": hits / (predicted | target).sum().clamp(min=1)}


def update_actor_and_alpha(agent, obs, target_entropy):
    """Maximise min Q - alpha log pi. One no-grad conv pass serves the actor and both Q heads
    (the original computes the same conv features twice); the critic's heads are in the graph
    but only the actor's optimiser steps (the critic's gradients are zeroed before its next step)."""
    with torch.no_grad():
        features = agent.critic.conv(obs)
    action, log_pi = agent.actor.sample(features)
    q1, q2 = agent.critic.heads(features, action)
    alpha = agent.log_alpha.exp()
    actor_loss = (alpha.detach() * log_pi - torch.min(q1, q2)).mean()
    agent.actor_optimizer.zero_grad()
    actor_loss.backward()
    agent.actor_optimizer.step()

    alpha_loss = (alpha * (-log_pi - target_entropy).detach()).mean()
    agent.alpha_optimizer.zero_grad()
    alpha_loss.backward()
    agent.alpha_optimizer.step()
    return {"losses/actor_loss": actor_loss.detach(), "losses/alpha_loss": alpha_loss.detach(), "losses/alpha": alpha.detach(),
            "losses/entropy": -log_pi.mean().detach()}


def soft_update(online, target, tau):
    """target <- target + tau * (online - target), for all parameters at once."""
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), tau)


def update_target(agent, args):
    """Slow heads (tau 0.01), faster conv stack and projection (tau 0.05), as DMC-GB."""
    for name in ("q1", "q2"):
        soft_update(getattr(agent.critic, name), getattr(agent.critic_target, name), args.critic_tau)
    for name in ("conv", "projection"):
        soft_update(getattr(agent.critic, name), getattr(agent.critic_target, name), args.encoder_tau)


def update(agent, batch, step, args, target_entropy, overlay_images=None):
    """One SGQN update, in the original's order: critic (mask from the pre-update critic);
    every 2nd step actor and temperature, target, then the attribution predictor (mask from the
    post-update critic, computed only on those steps). Returns the loss tensors (no .item():
    the caller syncs only when it logs)."""
    if args.augmentation == "shift":
        batch = shifted_copies(batch, args.shift_copies)
    obs, action, reward, next_obs, not_done = batch
    first = len(obs) // args.shift_copies  # the first copy: the actor and the attribution predictor read only it, as DrQ's actor
    metrics = update_critic(agent, obs, action, reward, next_obs, not_done, args)
    if step % args.actor_update_freq == 0:
        metrics |= update_actor_and_alpha(agent, obs[:first], target_entropy)
    if step % args.target_update_freq == 0:
        update_target(agent, args)
    if args.aux_update_freq and step % args.aux_update_freq == 0:
        metrics |= update_aux(agent, obs[:first], action[:first], overlay_images, args)
    return metrics


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
QUIET_SECONDS = 25  # the longest the console stays silent while training (the first-updates burst, evaluations)


def policy_action(agent, obs, device, deterministic):
    """Actions for a batch of observations: the tanh of the mean when evaluating, a sample when
    training."""
    with torch.no_grad():
        features = agent.critic.conv(torch.as_tensor(obs, device=device).float())
        action = torch.tanh(agent.actor(features)[0]) if deterministic else agent.actor.sample(features)[0]
    return action.cpu().numpy()


def evaluate(agent, eval_envs, modes, episodes, device, video_dir=None, step=0, stop=None):
    """Mean-action returns per mode, {mode: array of episode returns}, and the first observation of
    each mode's first episode. The modes' envs step together (one batched policy pass per step; see
    make_eval_envs). With video_dir, the first episode of each mode is written as an mp4. When
    `stop.signum` is set (an interrupt) it gives up at once and returns (None, None)."""
    returns, shown = np.zeros((episodes, len(modes))), time.time()
    for episode in range(episodes):
        obs, _ = eval_envs.reset()
        first_obs = obs if episode == 0 else first_obs
        done, frames = np.zeros(len(modes), dtype=bool), []
        while not done.all():
            if stop is not None and stop.signum:
                return None, None
            if video_dir and episode == 0:
                frames.append(video_frames(agent, eval_envs.call("render"), obs, device))
            obs, reward, terminated, truncated, _ = eval_envs.step(policy_action(agent, obs, device, True))
            returns[episode] += np.where(done, 0.0, reward)  # an env that ended early restarts: ignore it
            done |= terminated | truncated
        for i, mode in enumerate(modes if frames else []):
            write_video(os.path.join(video_dir, f"{mode}_step{step}.mp4"), [f[i] for f in frames])
        if time.time() - shown > QUIET_SECONDS and episode + 1 < episodes:
            print(f"evaluating: {episode + 1}/{episodes} episodes done", flush=True)
            shown = time.time()
    return {mode: returns[:, i] for i, mode in enumerate(modes)}, first_obs


def video_frames(agent, frames, obs, device):
    """What --capture-video records at each step, one picture per mode: the rendered frame | the
    same frame with the guided-backprop heat map of the newest stacked frame laid over it."""
    obs_t = torch.as_tensor(obs, device=device).float()
    action = torch.as_tensor(policy_action(agent, obs, device, True), device=device)
    heat = heat_colours(heat_map(guided_backprop(agent.critic, obs_t, action)))  # (modes, H, W, 3)
    frames = np.stack(frames)
    overlay = (0.4 * frames + 0.6 * 255 * heat).astype(np.uint8)
    return np.concatenate([frames, overlay], axis=2)


def heat_map(attribution):
    """|attribution| max over colour channels, per frame, scaled to [0, 1] per sample, as
    (B, H, W, frames) numpy for pictures."""
    b, c, h, w = attribution.shape
    per_frame = attribution.abs().view(b, c // 3, 3, h, w).amax(dim=2)
    per_frame = per_frame / per_frame.flatten(1).amax(dim=1).clamp(min=1e-12)[:, None, None, None]
    return per_frame.permute(0, 2, 3, 1).cpu().numpy()


def heat_colours(heat):
    """A black-red-yellow-white colour map: (..., frames) in [0, 1] -> (..., 3) of the last frame."""
    h = heat[..., -1:]
    return np.clip(np.concatenate([3 * h, 3 * h - 1, 3 * h - 2], axis=-1), 0, 1)


def log_saliency_images(writer, agent, obs, quantile, step):
    """One row per observation: newest frame | heat map | saliency mask | predicted mask."""
    action = torch.tanh(agent.actor(agent.critic.conv(obs).detach())[0]).detach()
    attribution = guided_backprop(agent.critic, obs, action)
    mask = saliency_mask(attribution, quantile)[:, -3:].float()
    if agent.decoder is not None:
        with torch.no_grad():
            predicted = (agent.decoder(agent.critic.projection(agent.critic.conv(obs)), action)[:, -3:] > 0).float()
    else:
        predicted = torch.zeros_like(mask)
    heat = torch.as_tensor(heat_colours(heat_map(attribution)), device=obs.device).permute(0, 3, 1, 2).float()
    row = torch.cat([obs[:, -3:] / 255, heat, mask, predicted], dim=3)  # (B, 3, H, 4W)
    writer.add_image("saliency/obs_heat_mask_predicted", torch.cat(list(row), dim=1), step)


def write_video(path, frames, upscale=4):
    """mp4 of HWC uint8 frames, upscaled by pixel repetition so players show them crisply."""
    import imageio.v2 as imageio  # only needed with --capture-video

    os.makedirs(os.path.dirname(path), exist_ok=True)
    big = [f.repeat(upscale, axis=0).repeat(upscale, axis=1) for f in frames]
    imageio.mimwrite(path, big, fps=30, macro_block_size=1)


def results_table(returns):
    rows = [f"{'mode':<12} {'return':>16}"] + [
        f"{mode:<12} {r.mean():>8.1f} +- {r.std():<5.1f}" for mode, r in returns.items()]
    return "\n".join(rows)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------
ALGORITHM = os.path.splitext(os.path.basename(__file__))[0]  # this script's name, in checkpoints and run files


def save_checkpoint(path, agent, args, step, wall_time_s, buffer=None, burst_updates=0):
    """Networks, optimisers, temperature, step, args, training wall time so far and RNG states (and
    how many updates of the first-updates burst an interrupt left done), written atomically: a crash
    (or a second Ctrl-C) while saving leaves the previous checkpoint intact."""
    parts = {f.name: getattr(agent, f.name) for f in dataclasses.fields(agent)}
    state = {
        "algorithm": ALGORITHM,
        "args": dataclasses.asdict(args),
        "step": step,
        "wall_time_s": wall_time_s,
        "burst_updates": burst_updates,
        "agent": {name: part.detach() if isinstance(part, torch.Tensor) else part.state_dict()
                  for name, part in parts.items() if part is not None},
        "rng": {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        "buffer": buffer.state_dict() if buffer is not None else None,
    }
    tmp = f"{path}.tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path):
    """Read a checkpoint written by this script. Any problem is a one-line ConfigError."""
    if not os.path.isfile(path):
        raise envs.ConfigError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        algorithm, _ = state["algorithm"], state["args"]["env_id"]
    except Exception as e:
        raise envs.ConfigError(f"cannot read checkpoint {path} ({type(e).__name__}): is it a .pt file from this project?") from None
    if algorithm != ALGORITHM:
        raise envs.ConfigError(f"checkpoint {path} was written by {algorithm}.py, not {ALGORITHM}.py")
    return state


def restore(agent, state, buffer=None):
    """Load networks, optimisers, temperature and global RNG states (and the buffer, if saved)."""
    for name, value in state["agent"].items():
        if isinstance(value, torch.Tensor):
            with torch.no_grad():
                getattr(agent, name).copy_(value)
        else:
            getattr(agent, name).load_state_dict(value)
    if buffer is not None and state["buffer"] is not None:
        buffer.load_state_dict(state["buffer"])
    random.setstate(state["rng"]["python"])
    np.random.set_state(state["rng"]["numpy"])
    torch.set_rng_state(state["rng"]["torch"])
    if state["rng"]["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])


# ---------------------------------------------------------------------------------------------
# Run plumbing: arguments, run files, signals, console
# ---------------------------------------------------------------------------------------------
POSITIVE = ("total_timesteps", "buffer_size", "batch_size", "actor_update_freq", "target_update_freq", "num_conv_layers",
            "num_filters", "projection_dim", "hidden_dim", "image_size", "frame_stack", "eval_freq", "eval_episodes",
            "log_freq", "console_freq", "save_freq", "shift_copies")
# What --resume may change; everything else (env, algorithm, architecture, seed) is the checkpoint's.
RESUMABLE = ("total_timesteps", "eval_freq", "eval_episodes", "eval_modes", "log_freq", "console_freq", "save_freq",
             "save_buffer", "keep_checkpoints", "capture_video", "video_easy_dir", "video_hard_dir", "davis_dir", "runs_dir", "cuda", "channels_last", "compile",
             "overlay_dir")


def as_flag(name, value):
    """A field as it is written on the command line: --num-filters 8, --no-cuda, --eval-modes train video_hard."""
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else f"--no-{flag[2:]}"
    return f"{flag} {' '.join(map(str, value)) if isinstance(value, tuple) else value}"


def merged_args(args, state, path, changeable, fresh=()):
    """The args a checkpoint was trained with, where the command line changes only the `changeable`
    fields (a flag counts as given when it differs from its default) and always sets the `fresh`
    ones. A given flag that contradicts the checkpoint on any other field is a one-line error naming
    it and the checkpoint's value."""
    saved, merged, conflicts = state["args"], {}, []
    for field in dataclasses.fields(Args):
        name, given = field.name, getattr(args, field.name)
        if name in ("resume", "eval_checkpoint", "eval_csv") + fresh or name not in saved:
            merged[name] = given
        elif given == field.default or given == saved[name]:
            merged[name] = saved[name]
        elif name in changeable:
            merged[name] = given
        else:
            conflicts.append(f"{as_flag(name, given)} (checkpoint: {saved[name]})")
    if conflicts:
        raise envs.ConfigError(f"{', '.join(conflicts)}: contradicts the checkpoint {path}; drop it (only "
                               f"{' '.join('--' + n.replace('_', '-') for n in changeable if n in merged)} may differ)")
    return Args(**merged)


def checked_args(args):
    """Every check that can fail, before anything slow starts, each a one-line envs.ConfigError: the
    checkpoints (a resumed or evaluated run takes its args from there; see merged_args), sizes and
    frequencies, env id and modes, folders. Returns the effective args (with the run folder's name),
    the --resume checkpoint and the --eval-checkpoint checkpoint (None when not given)."""
    if args.resume and args.eval_checkpoint:
        raise envs.ConfigError("give --resume (continue training) or --eval-checkpoint (evaluate only), not both")
    resumed = load_checkpoint(args.resume) if args.resume else None
    evaluated = load_checkpoint(args.eval_checkpoint) if args.eval_checkpoint else None
    if resumed:
        args = merged_args(args, resumed, args.resume, RESUMABLE)
        if args.runs_dir == resumed["args"].get("runs_dir", Args.runs_dir):  # not moved: continue beside the checkpoint
            args.runs_dir, args.run_name = os.path.split(os.path.dirname(args.resume) or ".")
    elif evaluated:
        # An evaluation is asked for afresh: its modes and episodes are the command line's (or their
        # defaults), never those the run was evaluated with while training.
        args = merged_args(args, evaluated, args.eval_checkpoint, RESUMABLE + ("seed",), fresh=("eval_episodes", "eval_modes"))
        args.eval_csv = args.eval_csv or os.path.join(os.path.dirname(args.eval_checkpoint), f"eval_checkpoint_step{evaluated['step']}.csv")
    else:
        args = dataclasses.replace(args, run_name=args.run_name or f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}")
    for name in POSITIVE:
        if getattr(args, name) < 1:
            raise envs.ConfigError(f"{as_flag(name, getattr(args, name))}: must be at least 1")
    if args.shift_copies > 1 and args.augmentation != "shift":
        raise envs.ConfigError(f"--shift-copies {args.shift_copies} needs --augmentation shift (unshifted copies would all be the same)")
    if args.learning_starts < 0:
        raise envs.ConfigError(f"--learning-starts {args.learning_starts}: must be 0 or more")
    if min(conv_output_size((args.image_size, args.image_size), args.num_conv_layers)) < 1:
        raise envs.ConfigError(f"--num-conv-layers {args.num_conv_layers} leaves no pixels of a {args.image_size}-pixel image")
    if not args.eval_modes:
        raise envs.ConfigError(f"--eval-modes is empty: give one or more of {' '.join(envs.ALL_MODES)}")
    if len(set(args.eval_modes)) < len(args.eval_modes):
        raise envs.ConfigError(f"--eval-modes {' '.join(args.eval_modes)}: a mode is listed twice")
    for name in ("video_easy_dir", "video_hard_dir", "davis_dir"):
        if getattr(args, name) and not os.path.isdir(getattr(args, name)):
            raise envs.ConfigError(f"{as_flag(name, getattr(args, name))}: no such folder")
    video_dirs = {"video_easy": args.video_easy_dir, "video_hard": args.video_hard_dir}
    for mode in args.eval_modes:
        envs.check_args(args.env_id, mode, action_repeat=args.action_repeat, frame_stack=args.frame_stack,
                        image_size=args.image_size, video_dir=video_dirs.get(mode), davis_dir=args.davis_dir)
    if evaluated:
        if os.path.isdir(args.eval_csv) or not os.path.isdir(os.path.dirname(args.eval_csv) or "."):
            raise envs.ConfigError(f"--eval-csv {args.eval_csv}: give a file name in an existing folder")
        return args, None, evaluated
    run_dir = os.path.join(args.runs_dir, args.run_name)
    if resumed and args.total_timesteps < resumed["step"]:
        raise envs.ConfigError(f"--total-timesteps {args.total_timesteps} is below the checkpoint's step {resumed['step']}")
    if not resumed and os.path.exists(os.path.join(run_dir, "checkpoint.pt")):
        raise envs.ConfigError(f"{run_dir} already holds a run: continue it with --resume {os.path.join(run_dir, 'checkpoint.pt')}, or give another --run-name")
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as e:
        raise envs.ConfigError(f"cannot make the run folder {run_dir} ({e.strerror}): check --runs-dir and --run-name") from None
    return args, resumed, None


def read_args(path):
    """The Args of a run, read back from its args.json (as main writes it)."""
    with open(path) as f:
        saved = json.load(f)
    if saved.get("algorithm") != ALGORITHM:
        raise envs.ConfigError(f"{path} is from {saved.get('algorithm')}.py, not {ALGORITHM}.py")
    fields = {f.name for f in dataclasses.fields(Args)}
    return Args(**{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in fields})


def write_json(path, data):
    """Written atomically (temp file + rename): a reader never sees half a file."""
    with open(f"{path}.tmp", "w") as f:
        json.dump(data, f, indent=2)
    os.replace(f"{path}.tmp", path)


EVALUATION_COLUMNS = ("step", "frames", "mode", "episode", "return")


def open_evaluations(path, previous=None, up_to_step=0):
    """evaluations.csv, open for appending a row per evaluation episode. A resumed run carries over
    the rows of `previous` (its checkpoint's folder) up to its checkpoint's step: a run killed after
    an evaluation but before its checkpoint trains that stretch again. Returns the file, the step of
    the last evaluation kept, and its mean return per mode."""
    rows = []
    if previous and os.path.isfile(previous):
        with open(previous, newline="") as f:
            rows = [row for row in csv.DictReader(f) if int(row["step"]) <= up_to_step]
    with open(f"{path}.tmp", "w", newline="") as f:
        writer = csv.DictWriter(f, EVALUATION_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(f"{path}.tmp", path)
    last_step = max((int(row["step"]) for row in rows), default=0)
    last = collections.defaultdict(list)
    for row in rows:
        if int(row["step"]) == last_step:
            last[row["mode"]].append(float(row["return"]))
    return open(path, "a", newline=""), last_step, {mode: float(np.mean(r)) for mode, r in last.items()}


def write_evaluation(csv_file, returns, step, frames):
    """Append a row per episode and flush, so that a killed run keeps what it evaluated."""
    csv.writer(csv_file).writerows([step, frames, mode, episode, float(r)]
                                   for mode, episode_returns in returns.items() for episode, r in enumerate(episode_returns))
    csv_file.flush()


class Interrupted(Exception):
    """main() stopped on SIGINT, SIGTERM or SIGUSR1 after writing its checkpoint. The script exits
    with `exit_code` = 128 + the signal's number (130, 143, 138), as a shell reports a killed job."""

    def __init__(self, signum, step, checkpoint):
        super().__init__(f"interrupted by {signal.Signals(signum).name} at step {step}")
        self.signum, self.step, self.checkpoint, self.exit_code = signum, step, checkpoint, 128 + signum


@contextlib.contextmanager
def stop_signals():
    """While the block runs, SIGINT, SIGTERM and SIGUSR1 only set `stop.signum`: the loop stops
    cleanly at the next check, and a second signal while saving changes nothing. Installed in the
    main thread only (the one Python lets set handlers: a launcher may call main() from another);
    the previous handlers come back when the block ends."""
    stop = types.SimpleNamespace(signum=None)

    def record(signum, frame):
        stop.signum = signum

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = {signum: signal.signal(signum, record) for signum in envs.STOP_SIGNALS} if in_main_thread else {}
    try:
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def duration(seconds):
    """'3h 05min' or '4min 12s'."""
    minutes = int(seconds) // 60
    return f"{minutes // 60}h {minutes % 60:02d}min" if minutes >= 60 else f"{minutes}min {int(seconds) % 60:02d}s"


def progress_line(step, args, recent, last_return, last_eval, updating_since):
    """The console's progress line. Steps per second come from the last few lines (`recent` holds
    their (time, step)); the ETA only once every step makes an update (from step `updating_since`,
    None before), and from those steps only: steps without updates are far faster."""
    recent.append((time.time(), step))
    while updating_since is not None and recent[0][1] < updating_since:
        recent.popleft()
    (t0, s0), (t1, s1) = recent[0], recent[-1]
    sps = f"{(s1 - s0) / (t1 - t0):.2f}" if s1 > s0 else "-"
    if updating_since is None:
        eta = "after the first updates"
    else:
        eta = duration((args.total_timesteps - step) * (t1 - t0) / (s1 - s0)) if s1 > s0 else "-"
    evaluation = "".join(f" {mode} {r:.1f}" for mode, r in last_eval.items())
    return (f"step {step}/{args.total_timesteps}  SPS {sps}  ETA {eta}  last return {last_return:.1f}"
            + (f"  eval{evaluation}" if evaluation else ""))


def describe_start(args, device, run_dir, agent, buffer):
    """The start block: where the run goes, on what, how big, and what it reserves."""
    trained = [getattr(agent, f.name) for f in dataclasses.fields(agent) if f.name != "critic_target"]
    parameters = sum(p.numel() for part in trained if isinstance(part, nn.Module) for p in part.parameters())
    on = f"GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else f"CPU, {torch.get_num_threads()} torch threads"
    size = buffer.capacity * buffer.bytes_per_frame
    size = f"{size / 2**30:.2f} GiB" if size >= 2**30 else f"{size / 2**20:.1f} MiB"
    print(f"{ALGORITHM}.py on {args.env_id} (seed {args.seed}), run folder {run_dir}\n"
          f"device: {on}\n"
          f"networks: {args.num_conv_layers} convs x {args.num_filters} filters, projection {args.projection_dim}, "
          f"hidden {args.hidden_dim}: {parameters / 1e6:.2f} M parameters trained\n"
          f"replay buffer: {buffer.capacity} frames x {buffer.bytes_per_frame} bytes = {size} (--buffer-size "
          f"{args.buffer_size}, or what {args.total_timesteps} steps store if less)\n"
          f"evaluation: every {args.eval_freq} steps, {args.eval_episodes} episodes on {' '.join(args.eval_modes)}, "
          f"in {len(args.eval_modes)} worker processes (starting)", flush=True)
    if device.type == "cpu" and (args.num_conv_layers, args.num_filters) == (Args.num_conv_layers, Args.num_filters):
        print("note: paper-size networks on a CPU take about 1 s (SAC) to 2.5 s (SGQN) per update on 2 cores: 500k steps "
              "is days to weeks, a GPU job; for a run of a few minutes see README 'Quick look on a laptop'", flush=True)


def buffer_capacity(args, episode_steps, saved=None):
    """Frames to reserve: --buffer-size, or what the run can store if less (a frame per step plus
    one per episode start; were it short, the ring would only overwrite its oldest frames). A
    restored buffer keeps its ring as saved (its size if it had wrapped)."""
    episodes = args.total_timesteps // episode_steps + 2 if episode_steps else args.total_timesteps + 1
    capacity = min(args.buffer_size, args.total_timesteps + episodes)
    if saved is not None:
        capacity = len(saved["frames"]) if saved["full"] else max(capacity, len(saved["frames"]))
    return capacity


# ---------------------------------------------------------------------------------------------
# Training loop
# ---------------------------------------------------------------------------------------------
def keep_freed_memory():
    """Make glibc keep freed memory for reuse rather than hand it back to the OS. An update
    allocates and frees activations of tens of MB (above glibc's mmap threshold); by default each
    one is unmapped when freed and the kernel zeroes fresh pages at the next update (on 2 CPU
    cores, SGQN's update 2.9 s -> 2.3 s; benchmarks/update_speed.py --default-allocator). The
    process keeps its peak memory instead. Results are unchanged. Returns False where libc is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameters from glibc's malloc.h
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))
    except (OSError, AttributeError):
        return False


def make_eval_envs(args, seed):
    """One env per evaluated mode, each seeded with its own word of `seed` (a SeedSequence), each in
    its own worker process so that the modes render in parallel on spare cores (spawned, so each
    worker makes its own GL context). The workers start with the stop signals blocked and then
    ignore them (envs.quiet_worker): a Ctrl-C reaches the whole process group, and the parent
    stops them itself."""
    video_dirs = {"video_easy": args.video_easy_dir, "video_hard": args.video_hard_dir}
    env_fns = [functools.partial(envs.make_env, args.env_id, int(mode_seed), mode, action_repeat=args.action_repeat,
                                 frame_stack=args.frame_stack, image_size=args.image_size, video_dir=video_dirs.get(mode),
                                 davis_dir=args.davis_dir)
               for mode, mode_seed in zip(args.eval_modes, seed.generate_state(len(args.eval_modes)))]
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, envs.STOP_SIGNALS)
    try:
        return gym.vector.AsyncVectorEnv(env_fns, context="spawn", worker=envs.quiet_worker)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


def main(args):
    """Train as `args` say (or, with --eval-checkpoint, only evaluate). Returns the run folder (the
    returns per mode when evaluating). Bad input raises envs.ConfigError before anything slow starts;
    SIGINT, SIGTERM and SIGUSR1 stop the run cleanly, checkpoint written, and raise Interrupted."""
    started = time.time()
    check_sgqn_args(args)
    args, resume_state, evaluated = checked_args(args)
    if args.sgqn_quantile is None:
        args.sgqn_quantile = domain_quantile(args.env_id)
    keep_freed_memory()
    with stop_signals() as stop:
        start_step = resume_state["step"] if resume_state else 0
        # One seed, an independent random stream per consumer (a resumed run starts fresh ones at its step).
        seeds = np.random.SeedSequence(args.seed, spawn_key=(start_step,))
        buffer_seed, env_seed, eval_seed, action_seed = seeds.spawn(4)
        overlay_seed = seeds.spawn(1)[0]  # a 5th stream: the four above are sac_baseline.py's
        random.seed(args.seed)
        np.random.seed(args.seed)
        torch.manual_seed(args.seed)
        torch.backends.cudnn.deterministic = args.torch_deterministic
        device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

        env = envs.make_env(args.env_id, int(env_seed.generate_state(1)[0]), "train", action_repeat=args.action_repeat,
                            frame_stack=args.frame_stack, image_size=args.image_size)
        env.action_space.seed(int(action_seed.generate_state(1)[0]))
        obs_shape, action_dim = env.observation_space.shape, env.action_space.shape[0]
        action_repeat = args.action_repeat or envs.default_action_repeat(args.env_id)
        agent = make_agent(obs_shape, action_dim, args, device)

        if evaluated:
            restore(agent, evaluated)
            step = evaluated["step"]
            print(f"evaluating {args.eval_checkpoint} (step {step}, {args.env_id}): {args.eval_episodes} episodes per mode", flush=True)
            eval_envs = make_eval_envs(args, eval_seed)
            returns, _ = evaluate(agent, eval_envs, args.eval_modes, args.eval_episodes, device, stop=stop)
            eval_envs.close()
            env.close()
            if returns is None:
                print(f"interrupted: evaluation of {args.eval_checkpoint} abandoned", flush=True)
                raise Interrupted(stop.signum, step, args.eval_checkpoint)
            with open_evaluations(args.eval_csv)[0] as csv_file:
                write_evaluation(csv_file, returns, step, step * action_repeat)
            print(results_table(returns))
            print(f"episode returns written to {args.eval_csv}")
            return returns

        saved_buffer = resume_state["buffer"] if resume_state else None
        buffer = ReplayBuffer(buffer_capacity(args, env.max_episode_steps, saved_buffer), (3, args.image_size, args.image_size),
                              action_dim, args.frame_stack, device, buffer_seed)
        run_dir = os.path.join(args.runs_dir, args.run_name)
        checkpoint_path = os.path.join(run_dir, "checkpoint.pt")
        write_json(os.path.join(run_dir, "args.json"), {**dataclasses.asdict(args), "algorithm": ALGORITHM})
        previous_csv = os.path.join(os.path.dirname(args.resume), "evaluations.csv") if resume_state else None
        evaluations, last_evaluated, last_eval = open_evaluations(os.path.join(run_dir, "evaluations.csv"), previous_csv, start_step)
        describe_start(args, device, run_dir, agent, buffer)
        wall_time_before = resume_state.get("wall_time_s", 0.0) if resume_state else 0.0
        burst_updates = resume_state.get("burst_updates", 0) if resume_state else 0
        if resume_state:
            restore(agent, resume_state, buffer)
            print(f"resumed at step {start_step}" + (f" with {len(buffer)} frames in the replay buffer" if len(buffer) else
                  f"; its replay buffer was not saved (--save-buffer): updates wait for {args.learning_starts} new frames (--learning-starts)"), flush=True)
        eval_envs = make_eval_envs(args, eval_seed)  # after the start block: the workers take a few seconds to start
        overlay = envs.OverlayImages(args.overlay_dir, args.image_size, int(overlay_seed.generate_state(1)[0])) if args.aux_update_freq else None
        writer = SummaryWriter(run_dir, purge_step=start_step if resume_state else None)
        if not resume_state:
            writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + "\n".join(f"|{k}|{v}|" for k, v in vars(args).items()))
        target_entropy = -float(action_dim)

        obs, _ = env.reset()
        buffer.add_first(obs[-3:])
        episode_return, episode_length, last_return, saved_step, updating_since = 0.0, 0, float("nan"), None, None
        loop_start = printed = time.time()
        metrics, recent = {}, collections.deque([(loop_start, start_step)], maxlen=30)
        for global_step in range(start_step, args.total_timesteps + 1):  # global_step: agent steps taken so far
            # Evaluate and save where due; a resumed run first evaluates a step whose evaluation an interrupt cut short.
            if (global_step % args.eval_freq == 0 or global_step == args.total_timesteps) and global_step > last_evaluated:
                video_dir = os.path.join(run_dir, "videos") if args.capture_video else None
                returns, first_obs = evaluate(agent, eval_envs, args.eval_modes, args.eval_episodes, device, video_dir, global_step, stop)
                if returns is None:  # interrupted: resuming from this step evaluates it
                    break
                write_evaluation(evaluations, returns, global_step, global_step * action_repeat)
                for mode, r in returns.items():
                    writer.add_scalar(f"eval/{mode}/episodic_return", r.mean(), global_step)
                log_saliency_images(writer, agent, torch.as_tensor(first_obs, device=device).float(), args.sgqn_quantile, global_step)
                print(f"evaluation at step {global_step}:\n{results_table(returns)}", flush=True)
                last_eval, last_evaluated = {mode: float(r.mean()) for mode, r in returns.items()}, global_step
            if (global_step % args.save_freq == 0 or global_step == args.total_timesteps) and global_step > start_step:
                save_checkpoint(checkpoint_path, agent, args, global_step, wall_time_before + time.time() - started,
                                buffer if args.save_buffer else None)
                if args.keep_checkpoints:  # for looking back at training (e.g. where the saliency lands at each step)
                    save_checkpoint(os.path.join(run_dir, f"checkpoint_step{global_step}.pt"), agent, args, global_step,
                                    wall_time_before + time.time() - started)
                print(f"checkpoint saved: {checkpoint_path} (step {global_step})", flush=True)
                saved_step = global_step
            if global_step == args.total_timesteps or stop.signum:
                break

            # Act: uniform random actions first, then samples from the policy.
            if global_step < args.learning_starts:
                action = env.action_space.sample()
            else:
                with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):
                    action = policy_action(agent, obs[None], device, deterministic=False)[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            buffer.add(obs[-3:], action, reward, terminated)
            episode_return, episode_length = episode_return + reward, episode_length + 1
            if terminated or truncated:
                writer.add_scalar("charts/episodic_return", episode_return, global_step)
                writer.add_scalar("charts/episodic_length", episode_length, global_step)
                last_return, episode_return, episode_length = episode_return, 0.0, 0
                obs, _ = env.reset()
                buffer.add_first(obs[-3:])

            # Learn: one update per agent step once the random steps are done (and, after resuming
            # without a saved buffer, once it holds learning_starts new frames again). As in DMC-GB
            # and the original SGQN, the first learning step makes one update per random step.
            if global_step >= args.learning_starts and len(buffer) > max(args.learning_starts, args.frame_stack):
                # An interrupted burst resumes where it stopped (burst_updates were done before the checkpoint).
                updates, learn_start = args.learning_starts - burst_updates if global_step == args.learning_starts else 1, time.time()
                updating_since = updating_since or global_step + 1
                # No weight cache: autocast keeps the bf16 copy of a weight it made until the context
                # exits, so later forward passes (the rest of the burst, the actor after the critic's
                # step) would use weights from before the optimiser steps; the critic diverged.
                with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16, cache_enabled=False):
                    for i in range(updates):
                        if stop.signum:
                            break
                        aux_step = args.aux_update_freq and global_step % args.aux_update_freq == 0
                        overlay_images = torch.as_tensor(overlay.sample(args.batch_size), device=device).float() if aux_step else None
                        burst_updates += updates > 1
                        metrics |= update(agent, buffer.sample(args.batch_size), global_step, args, target_entropy, overlay_images)
                        if updates > 1 and time.time() - printed > QUIET_SECONDS:
                            print(f"step {global_step}/{args.total_timesteps}  first updates {i + 1}/{updates}, "
                                  f"{duration((time.time() - learn_start) / (i + 1) * (updates - i - 1))} to go", flush=True)
                            printed = time.time()
            if stop.signum and global_step == args.learning_starts:  # an interrupted burst: its updates so far are kept
                break

            step = global_step + 1
            if step % args.log_freq == 0 and metrics:
                for name, value in metrics.items():
                    writer.add_scalar(name, value.item(), step)
                writer.add_scalar("charts/SPS", (step - start_step) / (time.time() - loop_start), step)
                writer.add_scalar("charts/frames", step * action_repeat, step)
            if step % args.console_freq == 0 or time.time() - printed > QUIET_SECONDS or step == updating_since:
                print(progress_line(step, args, recent, last_return, last_eval, updating_since), flush=True)
                printed = time.time()

        # Finished, or interrupted: the checkpoint, the workers, the files, one line on the console.
        step = global_step
        finished = step == args.total_timesteps and last_evaluated == step
        if saved_step != step:
            save_checkpoint(checkpoint_path, agent, args, step, wall_time_before + time.time() - started,
                            buffer if args.save_buffer else None, burst_updates if step == args.learning_starts else 0)
        env.close()
        eval_envs.close()
        writer.close()
        evaluations.close()
        wall_time = wall_time_before + time.time() - started
        write_json(os.path.join(run_dir, "summary.json"), {
            "status": "finished" if finished else "interrupted", "step": step, "total_timesteps": args.total_timesteps,
            "wall_time_s": round(wall_time, 1), "last_evaluation": last_eval, "checkpoint": checkpoint_path,
            "algorithm": ALGORITHM})
        if not finished:
            print(f"interrupted at step {step}; resume with: python {ALGORITHM}.py --resume {checkpoint_path}", flush=True)
            raise Interrupted(stop.signum, step, checkpoint_path)
    print(f"finished {step} steps in {duration(wall_time)}; last evaluation:"
          + "".join(f" {mode} {r:.1f}" for mode, r in last_eval.items())
          + f"\ncheckpoint {checkpoint_path}, evaluations {os.path.join(run_dir, 'evaluations.csv')}, "
          f"TensorBoard: tensorboard --logdir {args.runs_dir}", flush=True)
    return run_dir


if __name__ == "__main__":
    try:
        main(tyro.cli(Args))
    except envs.ConfigError as e:
        sys.exit(f"error: {e}")
    except Interrupted as e:
        sys.exit(e.exit_code)
