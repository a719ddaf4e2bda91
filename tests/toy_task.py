"""Tiny pure-numpy pixel task ("reach") for fast learning tests of SAC / SGQN.

A point agent (pure-red square, rgb exactly (255, 0, 0)) must move onto a target
(pure-green square, exactly (0, 255, 0)); both are placed at random each episode.
Action = 2-D velocity in [-1, 1]^2, scaled to at most ``0.1 * image_size`` pixels per
axis per step.  Reward per step = ``1 / (1 + dist / (image_size / 8))`` in (0, 1], with
dist the agent-target centre distance in pixels: dense everywhere, peaked (1) on target.
Episodes last 50 steps and end by truncation only (terminated is always False).

``toy-reach_distract`` adds 5 moving, bouncing discs of random colours, irrelevant to
the reward; they cover ~40% of the image on average (20-60% per frame).  Every
distractor / background colour has all channels in [20, 235], so it never equals pure
red/green and ``relevant_pixels`` recovers agent + target by exact colour match.
Agent and target are always drawn on top (agent over target).
Modes other than "train" add a distraction that keeps agent/target pixels intact:
color_easy (mildly shifted background colour), color_hard (any background colour),
video_easy (3 moving background blobs), video_hard (moving two-colour checkerboard
with random colours, plus blobs).

Return per 50-step episode (mean ± std over 20 episodes, image_size=32, both ids, since
agent/target dynamics are identical and only the pixels differ):
    uniform random actions  11.2 ± 3.6
    move to image centre    14.9 ± 4.1   (target-blind baseline)
    greedy_action           47.5 ± 1.3   (upper bound ~ 50)
Step time at 32x32 (slow shared CPU): ~35-60 us toy-reach, ~70-110 us distract,
<= ~140 us in the video_* modes.

Usage: ``monkeypatch.setattr(envs, "make_env", make_toy_env)``.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch

TOY_IDS = ("toy-reach", "toy-reach_distract")
MODES = ("train", "color_easy", "color_hard", "video_easy", "video_hard")
RED, GREEN = np.array([255, 0, 0], np.uint8), np.array([0, 255, 0], np.uint8)
EPISODE_LEN = 50


class ToyReachEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}
    render_mode = "rgb_array"

    def __init__(self, distract: bool, seed: int, mode: str = "train", frame_stack: int = 3, image_size: int = 32):
        self.distract, self.mode, self.fs, self.size = distract, mode, frame_stack, image_size
        self.sq = max(2, image_size // 8)  # side of agent / target squares
        self.speed = 0.1 * image_size  # max pixels per axis per step
        self.scale = image_size / 8.0  # reward length scale
        self.max_episode_steps = EPISODE_LEN
        self.observation_space = gym.spaces.Box(0, 255, (3 * frame_stack, image_size, image_size), np.uint8)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._ar = np.arange(image_size, dtype=np.float32)  # pixel coordinates
        self._rng = np.random.default_rng(seed)
        self._frames = np.zeros((frame_stack, 3, image_size, image_size), np.uint8)
        self._bg_label = np.zeros((image_size, image_size), np.intp)

    # ----------------------------------------------------------------- helpers
    def _colors(self, n, lo=20, hi=236):  # never pure red / green
        return self._rng.integers(lo, hi, (n, 3)).astype(np.uint8)

    def _new_discs(self, n, rmin, rmax, vmax):  # (n, 5): x, y, vx, vy, radius
        S, rng = self.size, self._rng
        return np.concatenate(
            [rng.uniform(0, S, (n, 2)), rng.uniform(-vmax, vmax, (n, 2)) * S, rng.uniform(rmin, rmax, (n, 1)) * S], axis=1
        )

    def _disc_masks(self):  # (n, H, W) bool, separable distances
        d = self._discs
        dy, dx = (self._ar - d[:, 1:2]) ** 2, (self._ar - d[:, 0:1]) ** 2
        return dy[:, :, None] + dx[:, None, :] < (d[:, 4] ** 2)[:, None, None]

    def _paint_square(self, img, center, col):
        x0, y0 = (min(max(int(round(c - self.sq / 2)), 0), self.size - self.sq) for c in center)
        img[y0 : y0 + self.sq, x0 : x0 + self.sq] = col

    def _render_frame(self):
        """Label map -> palette lookup: 0 = background, 1 = checker colour, 2 + k = disc k (later on top)."""
        label = self._bg_label
        if self.mode == "video_hard":  # moving checkerboard texture
            cell, t = max(2, self.size // 8), self._t
            label = (((self._ar + t) // cell)[None, :] + ((self._ar + 0.5 * t) // cell)[:, None]).astype(np.intp) % 2
        if len(self._discs):  # topmost covering disc = largest id
            label = np.maximum(label, (self._disc_masks() * self._disc_ids).max(0))
        img = self._palette[label]
        self._paint_square(img, self._target, GREEN)
        self._paint_square(img, self._agent, RED)  # agent drawn last (on top)
        return img

    def _dist(self):
        return math.hypot(self._agent[0] - self._target[0], self._agent[1] - self._target[1])

    # --------------------------------------------------------------- gym API
    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        S, h, rng = self.size, self.sq / 2, self._rng
        self._agent, self._target = rng.uniform(h, S - h, 2), rng.uniform(h, S - h, 2)
        self._t = 0
        bg = np.array([40, 40, 40], np.uint8)  # plain dark grey
        if self.mode == "color_easy":
            bg = (bg + rng.integers(0, 60, 3)).astype(np.uint8)
        elif self.mode in ("color_hard", "video_hard"):
            bg = self._colors(1)[0]
        self._n_blobs = 3 if self.mode.startswith("video") else 0  # background blobs, drawn below distractors
        self._discs = np.concatenate(
            [self._new_discs(self._n_blobs, 0.15, 0.3, 0.04), self._new_discs(5 if self.distract else 0, 0.13, 0.25, 0.06)]
        )
        self._disc_ids = np.arange(2, 2 + len(self._discs))[:, None, None]
        self._palette = np.concatenate([bg[None], self._colors(1 + len(self._discs))])
        self._frames[:] = self._render_frame().transpose(2, 0, 1)[None]
        return self._frames.reshape(-1, S, S).copy(), {}

    def step(self, action):
        a = np.clip(np.asarray(action, np.float64).reshape(2), -1.0, 1.0)
        h = self.sq / 2
        self._agent = np.clip(self._agent + self.speed * a, h, self.size - h)
        self._t += 1
        if len(self._discs):  # move discs, bounce off the borders
            pos, vel = self._discs[:, :2], self._discs[:, 2:4]
            pos += vel
            vel[(pos < 0) | (pos > self.size)] *= -1
            np.clip(pos, 0, self.size, out=pos)
        reward = 1.0 / (1.0 + self._dist() / self.scale)
        self._frames[:-1] = self._frames[1:]
        self._frames[-1] = self._render_frame().transpose(2, 0, 1)
        truncated = self._t >= EPISODE_LEN
        return self._frames.reshape(-1, self.size, self.size).copy(), reward, False, truncated, {}

    def render(self):
        return self._render_frame()

    def agent_masks(self):
        """As envs.DMCEnv.agent_masks: the agent's (red) pixels of each stacked frame, (F, H, W) bool."""
        return np.all(self._frames == RED[None, :, None, None], axis=1)


def make_toy_env(
    env_id: str,
    seed: int,
    mode: str = "train",
    *,
    action_repeat=None,
    frame_stack: int = 3,
    image_size: int = 32,
    video_dir=None,
    intensity=None,
    davis_dir=None,
    camera_id=None,
) -> gym.Env:
    """Drop-in for ``envs.make_env``; action_repeat / video_dir / intensity / davis_dir / camera_id are
    accepted and ignored."""
    check_args(env_id, mode)
    return ToyReachEnv(env_id == "toy-reach_distract", seed, mode, frame_stack, image_size)


def check_args(env_id: str, mode: str = "train"):
    """Drop-in for ``envs.check_args``: a ValueError for an unknown id or mode."""
    if env_id not in TOY_IDS:
        raise ValueError(f"unknown toy env id {env_id!r}; expected one of {TOY_IDS}")
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")


def greedy_action(env) -> np.ndarray:
    """Move straight toward the target, using the env's internal state."""
    env = env.unwrapped
    delta = (env._target - env._agent) / env.speed
    return np.clip(delta, -1.0, 1.0).astype(np.float32)


def relevant_pixels(obs):
    """Bool mask, same shape as obs ((B, 3F, H, W) or (C, H, W)): pixel is exactly pure red or pure green
    in that stacked frame, repeated over the frame's 3 channels.  numpy uint8 or torch tensors in 0..255."""
    single = obs.ndim == 3
    x = obs[None] if single else obs
    B, C, H, W = x.shape
    f = x.reshape(B, C // 3, 3, H, W)
    r, g, b = f[:, :, 0], f[:, :, 1], f[:, :, 2]
    hit = ((r == 255) & (g == 0) & (b == 0)) | ((r == 0) & (g == 255) & (b == 0))  # (B, F, H, W)
    if isinstance(hit, torch.Tensor):
        mask = hit.unsqueeze(2).expand(B, C // 3, 3, H, W).reshape(B, C, H, W)
    else:
        mask = np.broadcast_to(hit[:, :, None], (B, C // 3, 3, H, W)).reshape(B, C, H, W)
    return mask[0] if single else mask
