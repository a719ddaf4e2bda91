"""SODA from pixels: soft data augmentation (Hansen & Wang 2021), a column of SGQN's table.

SODA (Hansen & Wang, "Generalization in Reinforcement Learning by Soft Data Augmentation", ICRA 2021,
https://arxiv.org/abs/2011.13389) as DMC-GB implements it and SGQN's paper compares it (Bertoin et al. 2022,
https://arxiv.org/abs/2209.09203): SAC from pixels trained on RAD's random crops (frames rendered at 100 px,
84-px crops in the update, the centre crop when acting, as `sac_baseline.py --augmentation crop`), plus an
auxiliary task every 2 steps. A predictor (the critic's conv stack, a projection, a head) reads a crop
overlaid with an image (0.5 crop + 0.5 image) and regresses, by the MSE of L2-normalised vectors, what an
exponential moving average of the conv stack and projection makes of another, clean crop of the same
frames. The critic's conv stack thus learns from both the TD loss and the auxiliary loss,
through two Adam optimisers, while the RL losses never see an overlay. Evaluation also runs on the
distraction modes of `envs` (colour changes, video backgrounds).

    python soda.py --env-id walker-walk                                  # SODA as DMC-GB runs it
    python soda.py --env-id walker-walk --overlay-dir ~/places365        # with Places365 photos as the overlays
    python soda.py --eval-checkpoint runs/<run>/checkpoint.pt            # evaluate only
    python soda.py --resume runs/<run>/checkpoint.pt                     # continue a run
    tensorboard --logdir runs

Where the original (SuReLI/SGQN's DMC/src/algorithms/soda.py, DMC-GB's) does what we do not, and why:
docs/soda.md. Run plumbing (checkpoints, run files, --resume, signals, console) lives in run_plumbing.py;
networks, buffer, augmentation, updates and evaluation are repeated line for line from sac_baseline.py
(tests/test_shared_code.py).
"""

import copy
import math
import os
import time
from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import envs
import run_plumbing


@dataclass
class Args:
    exp_name: str = "soda"
    """name of this experiment (part of the run folder's name)"""
    env_id: str = "walker-walk"
    """DMC task as `domain-task`, e.g. cheetah-run, walker-walk, ball_in_cup-catch"""
    seed: int = 1
    """seed of the experiment (networks, buffer sampling, environments)"""
    torch_deterministic: bool = True
    """cudnn's deterministic conv algorithms, chosen without timing: a run repeats to the digit on one GPU and software stack (--no-torch-deterministic: cudnn.benchmark times the algorithms for the fixed shapes and keeps the fastest)"""
    cuda: bool = True
    """use the GPU when there is one (--no-cuda: the CPU)"""
    capture_video: bool = False
    """if toggled, write an mp4 of one evaluation episode per mode to `runs/{run}/videos`"""

    # Algorithm (SPEC section 3; DMC-GB's defaults: its arguments.py)
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
    augmentation: Literal["crop"] = "crop"
    """RAD's random crops of frames rendered 16 px larger (100 for 84), the centre when acting: SODA's RL losses see only these"""
    aux_update_freq: int = 2
    """take a step of the auxiliary (SODA) loss every N agent steps, after the actor's (0: off, which leaves RAD)"""
    aux_lr: float = 3e-4
    """learning rate of the auxiliary loss's Adam (over the critic's conv stack, SODA's projection and head)"""
    aux_beta: float = 0.9
    """beta1 of the auxiliary loss's Adam"""
    soda_batch_size: int = 256
    """observations sampled for each auxiliary step (each cropped twice: one crop overlaid, one clean)"""
    soda_tau: float = 0.005
    """soft-update rate of SODA's target (the moving average of the conv stack, projection and head)"""
    overlay_dir: Optional[str] = None
    """folder of jpg/png images (e.g. Places365) to overlay in the auxiliary task; procedural if unset"""
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
    critic_tau: float = 0.01
    """soft-update rate of the target Q heads"""
    encoder_tau: float = 0.05
    """soft-update rate of the target conv stack and projection"""

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
    """physics steps per agent step; None: cartpole 8, finger 2, else 4 (DMC-GB's)"""
    image_size: int = 84
    """frame size in pixels the networks see (rendered 16 px larger, random-cropped to it when updating, the centre when acting)"""
    frame_stack: int = 3
    """frames stacked into one observation"""

    # Evaluation
    eval_freq: int = 10_000
    """evaluate every N agent steps (and at the end)"""
    eval_episodes: int = 10
    """episodes per mode and evaluation (DMC-GB reports 30: use that with --eval-checkpoint)"""
    eval_modes: tuple[str, ...] = envs.MODES
    """modes to evaluate on: train color_easy color_hard video_easy video_hard distracting_cs_easy distracting_cs_medium distracting_cs_hard"""
    video_easy_dir: Optional[str] = None
    """folder of background videos for video_easy (e.g. DMC-GB's video_easy); procedural if unset"""
    video_hard_dir: Optional[str] = None
    """folder of background videos for video_hard (e.g. DMC-GB's video_hard); procedural if unset"""
    davis_dir: Optional[str] = None
    """DAVIS 2017 folder (<dir>/JPEGImages/480p/<sequence>/*.jpg) for the distracting_cs modes; procedural videos if unset"""
    eval_checkpoint: Optional[str] = None
    """no training: evaluate this checkpoint (or run folder; its env and architecture) on --eval-modes, print mean +- std per mode"""
    eval_csv: Optional[str] = None
    """with --eval-checkpoint: write a row per episode here; None: eval_checkpoint_step{N}.csv beside the checkpoint"""

    # Speed (figures in the README's "Speed" section)
    channels_last: bool = True
    """keep conv weights and activations channels-last (NHWC): the same maths in a faster memory layout (--no-channels-last for NCHW)"""
    bf16: bool = False
    """run the networks under bfloat16 autocast when updating and acting (weights, losses and optimiser state stay fp32)"""
    compile: bool = False
    """torch.compile the conv stacks, projections, heads and actor, each on its own: the same maths, fused; the first updates compile"""
    tf32: bool = False
    """on an Ampere or newer GPU, let convs and matmuls round their inputs to TF32 (10-bit mantissa): faster; off, full fp32 as the original ran (torch 1.7.1 on CUDA 9.2, before TF32)"""

    # Run folder, logging and checkpoints
    run_name: Optional[str] = None
    """name of the run folder (default `{env_id}__{exp_name}__{seed}__{unix_time}`); launchers give stable names"""
    runs_dir: str = "runs"
    """parent folder of the run folders"""
    log_freq: int = 100
    """write training scalars to TensorBoard every N steps"""
    console_freq: int = 1000
    """print a progress line every N steps (and whenever the console would otherwise stay silent for 25 s)"""
    track: bool = False
    """if toggled, also log the run to Weights & Biases: its TensorBoard scalars, Args as config (needs `pip install wandb`)"""
    wandb_project_name: str = "sgqn"
    """the W&B project of --track"""
    wandb_entity: Optional[str] = None
    """the W&B entity (team or user) of --track (None: your default)"""
    save_freq: int = 50_000
    """write `runs/{run}/checkpoint.pt` every N steps (and at the end, and when interrupted)"""
    save_buffer: bool = False
    """also store the replay buffer in checkpoints (large: ~21 KB per frame)"""
    keep_checkpoints: bool = False
    """also keep each periodic checkpoint as `checkpoint_step{N}.pt` beside `checkpoint.pt` (networks only, no buffer)"""
    resume: Optional[str] = None
    """continue the run of this checkpoint (or run folder) with its args: a flag given that contradicts it is an error, except evaluation, logging, checkpoint, folder and device flags"""


# ---------------------------------------------------------------------------------------------
# Networks (DMC-GB's SharedCNN + RLProjection + SAC heads; SODA's predictor)
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
        self.in_size = obs_shape[-1]  # larger frames (RAD's, SODA's) are centre-cropped to it
        self.out_shape = (num_filters, *conv_output_size(obs_shape[1:], num_layers))
        self.out_dim = math.prod(self.out_shape)

    def forward(self, obs):
        return self.convs(center_crop(obs, self.in_size) / 255.0).flatten(1)


def center_crop(obs, size):
    """The centre size x size pixels: what RAD and SODA act and are evaluated on, of the frames rendered 16
    pixels larger for their random crops (DMC-GB's CenterCrop, the first layer of its encoder); a view, and
    for frames of that size already the frames themselves."""
    top, left = (obs.shape[-2] - size) // 2, (obs.shape[-1] - size) // 2
    return obs[..., top : top + size, left : left + size]


def conv_output_size(hw, num_layers):
    """Spatial size after the stack: (84 - 3) // 2 + 1 = 41, then -2 per stride-1 conv -> 21."""
    return tuple((s - 3) // 2 + 1 - 2 * (num_layers - 1) for s in hw)


def check_network_args(args):
    """The networks' flags, checked with the others before anything slow starts (one-line ConfigError)."""
    if min(conv_output_size((args.image_size, args.image_size), args.num_conv_layers)) < 1:
        raise envs.ConfigError(f"--num-conv-layers {args.num_conv_layers} leaves no pixels of a {args.image_size}-pixel image")


def check_soda_args(args):
    """SODA's flags: a batch the batch norms can normalise, a rate in (0, 1], a folder that exists."""
    if args.aux_update_freq < 0:
        raise envs.ConfigError(f"--aux-update-freq {args.aux_update_freq}: must be 0 (off) or more")
    if args.soda_batch_size < 2:
        raise envs.ConfigError(f"--soda-batch-size {args.soda_batch_size}: must be at least 2 (SODA's batch norms)")
    if not 0 < args.soda_tau <= 1:
        raise envs.ConfigError(f"--soda-tau {args.soda_tau}: must be in (0, 1]")
    if args.overlay_dir and not os.path.isdir(args.overlay_dir) and not args.eval_checkpoint:  # evaluating draws none
        raise envs.ConfigError(f"--overlay-dir {args.overlay_dir}: no such folder")


def projection(in_dim, out_dim):
    """Linear -> LayerNorm -> tanh: the actor and the critic each have their own."""
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim), nn.Tanh())


def mlp(in_dim, hidden_dim, out_dim):
    hidden = [nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, hidden_dim), nn.ReLU()]
    return nn.Sequential(*hidden, nn.Linear(hidden_dim, out_dim))


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
        """Mean and log-std of the pre-tanh Gaussian; log-std squashed into [-10, 2]. At least fp32:
        under --bf16 the tanh squash and its log-determinant would lose the actions near +-1."""
        out = self.mlp(self.projection(conv_features))
        mean, log_std = out.to(torch.promote_types(out.dtype, torch.float32)).chunk(2, dim=-1)
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


def soda_mlp(in_dim, hidden_dim, out_dim):
    """Linear -> BatchNorm -> ReLU -> Linear: SODA's projection and head (DMC-GB's SODAMLP; every width the
    projection dim, as there). Always in training mode, so the batch norms use the batch's statistics, as in
    the original, whose agent.eval() does not reach them; the networks are used only in the update."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.BatchNorm1d(hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim))


class SODAPredictor(nn.Module):
    """The critic's conv stack (shared: the auxiliary loss trains it) -> SODA's projection -> its head."""

    def __init__(self, conv, projection_dim):
        super().__init__()
        self.conv = conv
        self.projection = soda_mlp(conv.out_dim, projection_dim, projection_dim)
        self.head = soda_mlp(projection_dim, projection_dim, projection_dim)
        # The new layers only: the original's predictor re-initialises the critic's conv stack too, after
        # the target critic copied it, so that its target starts from other conv weights (docs/soda.md).
        self.projection.apply(weight_init), self.head.apply(weight_init)

    def encode(self, obs):
        """The representation SODA's target reads the clean crop with (conv stack and projection)."""
        return self.projection(self.conv(obs))

    def forward(self, obs):
        return self.head(self.encode(obs))


# ---------------------------------------------------------------------------------------------
# Replay buffer: each rendered frame stored once, stacks rebuilt when sampling
# ---------------------------------------------------------------------------------------------
class ReplayBuffer:
    """A ring of frames. Slot i holds one frame and, unless it is an episode's first frame, the
    transition that produced it (action, reward, not_done). `episode_step[i]` counts frames since
    the episode's first, so stacks never reach into the previous episode: at an episode start the
    first frame repeats, exactly as the env's frame stack does."""

    ARRAYS = ("frames", "actions", "rewards", "not_dones", "episode_step")  # a slot of each per frame: a checkpoint saves them

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
        batch = (obs, self.actions[idx], self.rewards[idx], next_obs, self.not_dones[idx])
        if torch.device(self.device).type == "cpu":
            return tuple(torch.as_tensor(x).float() for x in batch)  # frames are uint8
        # To a GPU: from page-locked copies, without waiting; the GPU's queue runs the copies before the update.
        return tuple(torch.from_numpy(x).pin_memory().to(self.device, non_blocking=True).float() for x in batch)


# ---------------------------------------------------------------------------------------------
# Augmentation
# ---------------------------------------------------------------------------------------------
def random_crop(obs, size):
    """RAD's random crop (Laskin et al. 2020, DMC-GB's `random_crop`): a size x size window at an independent
    random offset per sample, two batched gathers on the device. Offsets 0..margin, both ends included, so
    that the centre crop seen when acting is the middle of the training crops (the original draws 0..margin-1)."""
    n, c, h, w = obs.shape
    top, left = torch.randint(0, h - size + 1, (2, n, 1, 1, 1), device=obs.device)
    rows = torch.arange(size, device=obs.device)[:, None] + top  # (n, 1, size, 1)
    cols = torch.arange(size, device=obs.device) + left  # (n, 1, 1, size)
    return obs.gather(2, rows.expand(n, c, size, w)).gather(3, cols.expand(n, c, size, size))


def random_overlay(obs, images):
    """0.5 * obs + 0.5 * image, in pixel units, with the same image over a sample's stacked
    frames (Hansen & Wang 2021): the distraction that SGQN's attribution predictor and SVEA's critic
    train to see through."""
    frames = obs.shape[1] // 3
    return 0.5 * obs + 0.5 * images.repeat(1, frames, 1, 1)


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
    soda_predictor: SODAPredictor  # on the critic's conv stack
    soda_target: SODAPredictor  # its moving average, with a conv stack of its own
    soda_optimizer: torch.optim.Optimizer


def make_agent(obs_shape, action_dim, args, device):
    sizes = (args.num_conv_layers, args.num_filters, args.projection_dim, args.hidden_dim)
    critic = Critic(obs_shape, action_dim, *sizes).to(device)
    actor = Actor(critic.conv.out_dim, action_dim, args.projection_dim, args.hidden_dim).to(device)
    critic_target = Critic(obs_shape, action_dim, *sizes).to(device)
    critic_target.load_state_dict(critic.state_dict())
    critic_target.requires_grad_(False)
    if args.channels_last:
        for net in (critic, critic_target):
            net.to(memory_format=torch.channels_last)
    if args.compile:  # each part on its own: the updates call the conv stack, projection and heads separately
        for part in (*critic.children(), *critic_target.children(), actor):
            part.compile()
    log_alpha = torch.tensor(math.log(args.init_temperature), device=device, requires_grad=True)
    soda_predictor = SODAPredictor(critic.conv, args.projection_dim).to(device)
    soda_target = copy.deepcopy(soda_predictor).requires_grad_(False)  # its own copy of the conv stack
    return Agent(
        actor=actor,
        critic=critic,
        critic_target=critic_target,
        log_alpha=log_alpha,
        actor_optimizer=torch.optim.Adam(actor.parameters(), lr=args.actor_lr, betas=(0.9, 0.999)),
        critic_optimizer=torch.optim.Adam(critic.parameters(), lr=args.critic_lr, betas=(0.9, 0.999)),
        alpha_optimizer=torch.optim.Adam([log_alpha], lr=args.alpha_lr, betas=(0.5, 0.999)),
        soda_predictor=soda_predictor,
        soda_target=soda_target,
        soda_optimizer=torch.optim.Adam(soda_predictor.parameters(), lr=args.aux_lr, betas=(args.aux_beta, 0.999)),
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
    """MSE of both Q heads to the TD target, on the cropped obs (RAD's critic step)."""
    target_q = td_target(agent, reward, next_obs, not_done, args.gamma)
    q1, q2 = agent.critic(obs, action)
    qf1_loss, qf2_loss = F.mse_loss(q1, target_q), F.mse_loss(q2, target_q)
    agent.critic_optimizer.zero_grad()
    (qf1_loss + qf2_loss).backward()
    agent.critic_optimizer.step()
    metrics = {"losses/qf1_loss": qf1_loss.detach(), "losses/qf2_loss": qf2_loss.detach()}
    return metrics | {"losses/qf1_values": q1.mean().detach(), "losses/qf1_spread": q1.std().detach()}


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
    metrics = {"losses/actor_loss": actor_loss.detach(), "losses/alpha_loss": alpha_loss.detach()}
    return metrics | {"losses/alpha": alpha.detach(), "losses/entropy": -log_pi.mean().detach()}


def update_soda(agent, obs, args, overlay_images):
    """SODA's auxiliary step (Hansen & Wang 2021): two random crops of each obs; the predictor reads
    the first overlaid with `overlay_images` (one per row), the target encodes the second, clean; the loss
    is the MSE of the two L2-normalised vectors. Its own Adam steps the predictor, the critic's conv stack
    included; then the target moves towards the predictor by soda_tau (all its parameters, as the original)."""
    clean = random_crop(obs, args.image_size)
    overlaid = random_overlay(random_crop(obs, args.image_size), overlay_images)
    prediction = F.normalize(agent.soda_predictor(overlaid), dim=1)
    with torch.no_grad():
        target = F.normalize(agent.soda_target.encode(clean), dim=1)
    soda_loss = F.mse_loss(prediction, target)
    agent.soda_optimizer.zero_grad()
    soda_loss.backward()
    agent.soda_optimizer.step()
    soft_update(agent.soda_predictor, agent.soda_target, args.soda_tau)
    return {"losses/soda_loss": soda_loss.detach()}


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


def update(agent, batch, step, args, target_entropy, soda_obs=None, overlay_images=None):
    """One SODA update: RAD's (critic every step; actor, temperature and target every 2nd, all on random
    crops of obs and next_obs, each cropped on its own), then on aux steps SODA's step on `soda_obs` (uncropped
    frames) and `overlay_images`, after the others, as the original orders them. Returns the loss tensors
    (no .item(): the caller syncs only when it logs)."""
    obs, action, reward, next_obs, not_done = batch
    obs, next_obs = random_crop(obs, args.image_size), random_crop(next_obs, args.image_size)
    metrics = update_critic(agent, obs, action, reward, next_obs, not_done, args)
    if step % args.actor_update_freq == 0:
        metrics |= update_actor_and_alpha(agent, obs, target_entropy)
    if step % args.target_update_freq == 0:
        update_target(agent, args)
    if soda_obs is not None:
        metrics |= update_soda(agent, soda_obs, args, overlay_images)
    return metrics


# ---------------------------------------------------------------------------------------------
# Saliency: where the critic looks, measured at each evaluation (sgqn.py trains on it; same code)
# ---------------------------------------------------------------------------------------------
def guided_backprop(critic, obs, action):
    """Guided backpropagation (Springenberg et al. 2015) of Q1(obs, a) with respect to obs: the
    plain gradient, except that at every ReLU the backward signal is also clamped at zero, so only
    evidence that increases Q flows back. No parameter gets a gradient (autograd.grad asks for the
    obs gradient only). sgqn.py's, without the Q values it also returns for its critic loss."""

    def clamp_backward(module, grad_input, grad_output):
        return (grad_input[0].clamp(min=0),)

    hooks = [m.register_full_backward_hook(clamp_backward) for m in critic.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.enable_grad():
            obs = obs.detach().requires_grad_(True)
            q1 = critic.q1(torch.cat([critic.projection(critic.conv(obs)), action], dim=-1))
            (attribution,) = torch.autograd.grad(q1.sum(), obs)
    finally:
        for hook in hooks:
            hook.remove()
    return attribution


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


def domain_quantile(env_id):
    """Paper's Table 3: large agents (walker, finger, cheetah) keep 5% of the pixels, others 2%."""
    return 0.95 if env_id.split("-")[0] in ("walker", "finger", "cheetah") else 0.98


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
def policy_action(agent, obs, device, deterministic):
    """Actions for a batch of observations: the tanh of the mean when evaluating, a sample when training."""
    with torch.no_grad():
        features = agent.critic.conv(torch.as_tensor(obs, device=device).float())
        action = torch.tanh(agent.actor(features)[0]) if deterministic else agent.actor.sample(features)[0]
    return action.cpu().numpy()


SALIENCY_EVERY = 15  # agent steps between the measured frames of each mode's first evaluation episode


def evaluate(agent, eval_envs, args, device, quantile, video_dir=None, step=0, stop=None):
    """Mean-action returns of args.eval_episodes episodes per mode of args.eval_modes, {mode: array of
    episode returns}; the first observation of each mode's first episode; and where the critic's
    saliency lands in that episode, {mode: (share of the mask on the agent, agent's share of the
    image, images measured)}, from every SALIENCY_EVERY-th step (saliency_on_agent at `quantile`).
    The modes' envs step together (one batched policy pass per step; see run_plumbing.make_eval_envs).
    With video_dir, the first episode of each mode is written as an mp4. When `stop.signum` is set (an
    interrupt) it gives up at once and returns (None, None, None). Never silent too long on the
    console (run_plumbing.heartbeat)."""
    modes, episodes = args.eval_modes, args.eval_episodes
    returns, first_obs, counts, measured = np.zeros((episodes, len(modes))), None, 0, 0
    for episode in range(episodes):
        obs, _ = eval_envs.reset(options={"track_agent": episode == 0})  # the first episode records the agent's pixels
        first_obs = obs if first_obs is None else first_obs
        done, frames, t = np.zeros(len(modes), dtype=bool), [], 0
        while not done.all():
            if stop is not None and stop.signum:
                return None, None, None
            if video_dir and episode == 0:
                frames.append(video_frames(agent, eval_envs.call("render"), obs, device))
            obs, reward, terminated, truncated, _ = eval_envs.step(policy_action(agent, obs, device, True))
            returns[episode] += np.where(done, 0.0, reward)  # an env that ended early restarts: ignore it
            done |= terminated | truncated
            t += 1
            if episode == 0 and t % SALIENCY_EVERY == 0 and not done.any():
                counts = counts + saliency_on_agent(agent, obs, eval_envs.call("agent_masks"), quantile, device)
                measured += 1
            run_plumbing.heartbeat(f"evaluating: episode {episode + 1}/{episodes}, step {t}")
        for i, mode in enumerate(modes if frames else []):
            run_plumbing.write_video(os.path.join(video_dir, f"{mode}_step{step}.mp4"), [f[i] for f in frames])
    saliency = run_plumbing.saliency_shares(modes, counts, measured * args.frame_stack)
    return {mode: returns[:, i] for i, mode in enumerate(modes)}, first_obs, saliency


def saliency_on_agent(agent, obs, agent_pixels, quantile, device):
    """mask_on_agent of the critic's saliency mask (guided backprop of Q1 at the policy's mean action,
    kept at `quantile` per stacked frame, as SGQN's consistency term masks, paper section 4.1)."""
    size = agent.critic.conv.in_size  # on what the networks see: the centre of RAD's and SODA's frames
    obs_t = center_crop(torch.as_tensor(obs, device=device).float(), size)
    action = torch.as_tensor(policy_action(agent, obs, device, True), device=device)
    mask = saliency_mask(guided_backprop(agent.critic, obs_t, action), quantile)
    return run_plumbing.mask_on_agent(mask, center_crop(torch.as_tensor(np.stack(agent_pixels), device=device), size)).cpu()


def video_frames(agent, frames, obs, device):
    """What --capture-video records at each step, one picture per mode: the rendered frame."""
    return np.stack(frames)


# ---------------------------------------------------------------------------------------------
# Training loop (its files, checks and console: run_plumbing.py)
# ---------------------------------------------------------------------------------------------
ALGORITHM = os.path.splitext(os.path.basename(__file__))[0]  # this script's name, in checkpoints and run files
SCRIPT = run_plumbing.Script(ALGORITHM, Args, (*run_plumbing.RESUMABLE, "overlay_dir"), (check_network_args, check_soda_args))


def main(args, given=None):
    """Train as `args` say (with --eval-checkpoint, only evaluate) and return the run folder (the returns per mode).
    `given`: the fields named on the command line, held against the checkpoint by --resume and --eval-checkpoint
    (None: those that differ from their defaults). Bad input raises envs.ConfigError before anything slow starts;
    SIGINT, SIGTERM and SIGUSR1 stop the run, checkpoint written, and raise run_plumbing.Interrupted."""
    started = time.time()
    args, resumed, evaluated = run_plumbing.checked_args(args, SCRIPT, given)
    run_plumbing.keep_freed_memory()
    with run_plumbing.stop_signals() as stop:
        start_step = resumed["step"] if resumed else 0
        # One seed, an independent random stream per consumer (a resumed run starts fresh ones at its step).
        seeds = np.random.SeedSequence(args.seed, spawn_key=(start_step,))
        buffer_seed, env_seed, eval_seed, action_seed = seeds.spawn(4)
        overlay_seed = int(seeds.spawn(1)[0].generate_state(1)[0])  # a 5th stream, for the overlay images
        device = run_plumbing.seeded_device(args)  # global RNGs seeded, cudnn and TF32 set, EGL on the run's GPU

        env = envs.make_env(args.env_id, int(env_seed.generate_state(1)[0]), "train", **run_plumbing.env_flags(args))
        env.action_space.seed(int(action_seed.generate_state(1)[0]))
        obs_shape, action_dim = (
            (args.frame_stack * 3, args.image_size, args.image_size),
            env.action_space.shape[0],
        )  # what the networks see
        agent = make_agent(obs_shape, action_dim, args, device)
        if evaluated:  # --eval-checkpoint: its networks on the eval modes, no training
            eval_envs = run_plumbing.start_evaluation(agent, args, evaluated, eval_seed)
            returns, _, saliency = evaluate(agent, eval_envs, args, device, domain_quantile(args.env_id), stop=stop)
            return run_plumbing.end_evaluation(args, evaluated, returns, saliency, stop.signum, env, eval_envs)

        size = run_plumbing.buffer_capacity(args, env.max_episode_steps, resumed)
        buffer = ReplayBuffer(size, (3, *env.observation_space.shape[1:]), action_dim, args.frame_stack, device, buffer_seed)
        run_plumbing.restore(agent, resumed, buffer)  # a resumed run's networks, optimisers, RNG states (and buffer, if saved)
        run = run_plumbing.Run(SCRIPT, args, resumed, started, device, agent, buffer)  # run files, TensorBoard, start block
        eval_envs = run.make_eval_envs(eval_seed)  # after the start block: the workers take a while to start
        overlay = envs.OverlayImages(args.overlay_dir, args.image_size, overlay_seed) if args.aux_update_freq else None
        target_entropy = -float(action_dim)

        obs, _ = env.reset()
        buffer.add_first(obs[-3:])
        episode_return, episode_length, metrics = 0.0, 0, {}
        for global_step in range(start_step, args.total_timesteps + 1):  # global_step: agent steps taken so far
            if run.evaluation_due(global_step):
                returns, _, saliency = evaluate(
                    agent, eval_envs, args, device, domain_quantile(args.env_id), run.video_dir, global_step, stop
                )
                if returns is None:  # interrupted: resuming from this step evaluates it
                    break
                run.evaluated(global_step, returns, saliency)
            if run.save_due(global_step):
                run.save(agent, global_step, buffer)
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
                run.episode_ended(global_step, episode_return, episode_length)
                episode_return, episode_length = 0.0, 0
                obs, _ = env.reset()
                buffer.add_first(obs[-3:])

            # Learn: one update per agent step once the random steps are done (and, after resuming
            # without a saved buffer, once it holds learning_starts new frames again). As in DMC-GB
            # and the original SGQN, the first learning step makes one update per random step.
            if global_step >= args.learning_starts and len(buffer) > max(args.learning_starts, args.frame_stack):
                # No weight cache: autocast keeps the bf16 copy of a weight it made until the context
                # exits, so later forward passes (the rest of the burst, the actor after the critic's
                # step) would use weights from before the optimiser steps; the critic diverged.
                with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16, cache_enabled=False):
                    for i in range(run.updates_at(global_step)):  # an interrupted burst resumes where it stopped
                        if stop.signum:
                            break
                        batch, soda_obs, images = buffer.sample(args.batch_size), None, None
                        if args.aux_update_freq and global_step % args.aux_update_freq == 0:  # SODA's own batch of frames
                            soda_obs = buffer.sample(args.soda_batch_size)[0]
                            images = overlay.sample_on(args.soda_batch_size, device)  # made on the device
                        metrics |= update(agent, batch, global_step, args, target_entropy, soda_obs, images)
                        run.updated(global_step, i)
            if stop.signum and global_step == args.learning_starts:  # an interrupted burst: its updates so far are kept
                break
            run.step_ended(global_step + 1, metrics)  # TensorBoard scalars, progress line
        return run.finish(global_step, agent, buffer, stop.signum, env, eval_envs)


if __name__ == "__main__":
    with run_plumbing.exit_codes():  # bad input: one `error:` line, exit 1; a stop signal: exit 128 + its number
        main(*run_plumbing.parse_cli(Args))
