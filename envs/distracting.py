"""Distracting Control Suite (Stone et al. 2021, arXiv 2101.02722) as DMC-GB wraps it: the `distracting_cs*` modes.

At intensity x (modes distracting_cs_easy / _medium / _hard: x = 0.1 / 0.2 / 0.3, the suite's levels; any x in
(0, 1] with `make_env(..., mode="distracting_cs", intensity=x)`), everything is dynamic, as in DMC-GB:
  camera      at every reset a random pose around the default one: horizontal and vertical angle within
              +-pi/2 x (kept above the floor and on the default side, except for reacher's top view), distance
              from (1 - 0.5 x) to (1 + 1.5 x) times the default, roll within +-pi/2 x. Then a random walk:
              Cartesian velocity of norm up to 0.4 x (Gaussian kicks of std 0.1 x; both scaled by distance / 4),
              roll velocity up to pi/50 x (kicks of std pi/300 x). The camera keeps looking at its default
              target point (fixed cameras) or at the agent (cameras that track its centre of mass).
  colour      every material's RGB drawn uniformly within +-x of its default at every reset (within [0, 1]),
              then a random walk with Gaussian steps of std 0.03 x, clipped to that range.
  background  the skybox shows a video frame (the same image on the six faces of the sky cube, as the
              original does); the floor's alpha is 0 for reacher, 1 for walker and cheetah, 0.3 otherwise. One
              random video per episode among the first 4 / 8 / all videos (x = 0.1 / 0.2 / 0.3; DMC-GB's table
              for other x), from a random frame, playing forwards or backwards and bouncing at the ends.
Camera, colours and video advance on every 2nd control step (physics step within the action repeat), where DMC-GB's
wrappers do: 2 advances per agent step at action repeat 4. Only what the last one leaves is rendered, so the
env applies them once per agent step. Domains: reacher, cartpole, finger, cheetah, ball_in_cup, walker.

Videos (`Backgrounds`): procedural by default (a fixed set of 60, as many as DAVIS 2017's train sequences, of 70
frames, about a DAVIS clip); or DAVIS 2017 read as the original reads it, `<davis_dir>/JPEGImages/480p/<sequence>/
*.jpg`, for the sequences of `<davis_dir>/ImageSets/2017/train.txt` (every sequence folder if that list is missing),
in sorted order (the original's list). Each clip is resized once, to the sky texture (2x the observation size).
All random draws come from the env's generator: the same seed gives the same frames.
"""

from __future__ import annotations

import functools
import os

import numpy as np

from envs import ConfigError
from envs.backgrounds import ProceduralClip, _image_files, load_clip, procedural_params

DOMAINS = ("reacher", "cartpole", "finger", "cheetah", "ball_in_cup", "walker")
LEVELS = {"distracting_cs_easy": 0.1, "distracting_cs_medium": 0.2, "distracting_cs_hard": 0.3}
PROCEDURAL_VIDEOS, PROCEDURAL_LENGTH = 60, 70
CAMERA_FIXED, CAMERA_TRACKCOM = 0, 2  # mjtCamLight values: the camera modes the original supports


def ground_alpha(domain: str) -> float:
    return {"reacher": 0.0, "walker": 1.0, "cheetah": 1.0}.get(domain, 0.3)


def num_videos(intensity: float) -> int | None:
    """Videos in use at `intensity` (None: all): DMC-GB's table (2 up to 0.05, 4 at 0.1, 6 at 0.15, 8 at 0.2, all
    from 0.3); an intensity between two entries uses the next one up."""
    for level, count in ((0.05, 2), (0.1, 4), (0.15, 6), (0.2, 8)):
        if intensity <= level + 1e-9:
            return count
    return None


@functools.lru_cache(maxsize=8)  # shared by the envs of a process; 8 clips at 168 px ~ 47 MB
def procedural_clip(k: int, size: int) -> np.ndarray:
    """Procedural background video k, (PROCEDURAL_LENGTH, size, size, 3) uint8: a fixed set, like a dataset."""
    clip = ProceduralClip(procedural_params(np.random.default_rng([3, k]), size, hard=True), PROCEDURAL_LENGTH)
    frames = np.stack([clip[t] for t in range(PROCEDURAL_LENGTH)])
    frames.flags.writeable = False
    return frames


class Backgrounds:
    """The background videos at one intensity: `len(b)` videos, `b.clip(k)` -> (T, size, size, 3) uint8.
    The folder is checked here, before MuJoCo starts; clips are read when first used."""

    def __init__(self, intensity: float, size: int, davis_dir: str | None = None):
        self.intensity, self.size, self.paths = intensity, size, None
        count = num_videos(intensity)
        if davis_dir is None:
            self.count = PROCEDURAL_VIDEOS if count is None else count
            return
        frames_dir = os.path.join(os.path.expanduser(davis_dir), "JPEGImages", "480p")
        if not os.path.isdir(frames_dir):
            raise ConfigError(
                f"davis_dir {davis_dir!r} has no JPEGImages/480p folder "
                "(DAVIS 2017 layout: <davis_dir>/JPEGImages/480p/<sequence>/*.jpg)"
            )
        train_list = os.path.join(os.path.expanduser(davis_dir), "ImageSets", "2017", "train.txt")
        if os.path.isfile(train_list):
            with open(train_list) as f:
                names = sorted({line.strip() for line in f if line.strip()})
        else:
            names = sorted(e for e in os.listdir(frames_dir) if os.path.isdir(os.path.join(frames_dir, e)))
        paths = [os.path.join(frames_dir, name) for name in names[:count]]
        empty = [p for p in paths if not os.path.isdir(p) or not _image_files(p, recursive=False)]
        if empty or not paths:
            where = f"sequence folder {empty[0]!r} is missing or holds no jpg/png" if empty else "holds no sequences"
            raise ConfigError(f"davis_dir {davis_dir!r}: {where}")
        if count is not None and len(paths) < count:
            raise ConfigError(f"davis_dir {davis_dir!r} has {len(paths)} train sequences; intensity {intensity} uses {count}")
        self.paths, self.count = paths, len(paths)

    def __len__(self):
        return self.count

    def clip(self, k: int) -> np.ndarray:
        return procedural_clip(k, self.size) if self.paths is None else load_clip(self.paths[k], self.size)


# ----------------------------------------------------------------------------- camera geometry
def sphere_to_cart(radius, h_angle, v_angle) -> np.ndarray:
    """Cartesian point of spherical coordinates (v_angle from the +z axis, h_angle in the xy plane from +x)."""
    return radius * np.array([np.sin(v_angle) * np.cos(h_angle), np.sin(v_angle) * np.sin(h_angle), np.cos(v_angle)])


def cart_to_sphere(p) -> np.ndarray:
    return np.array([np.linalg.norm(p), np.arctan2(p[1], p[0]), np.arctan2(np.linalg.norm(p[:2]), p[2])])


def look_at(target, position, keep_horizon: bool) -> np.ndarray:
    """Camera frame (columns: camera x, y, z in world coordinates; a camera looks along its -z) looking from
    `position` at `target`. keep_horizon: the camera's x axis stays horizontal (no roll). Otherwise the smallest
    rotation from looking straight down, which stays smooth near the vertical (reacher's top view)."""
    forward = (target - position) / np.linalg.norm(target - position)
    if keep_horizon:
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right = right / np.linalg.norm(right) if np.linalg.norm(right) > 1e-9 else np.array([1.0, 0.0, 0.0])
        return np.stack([right, np.cross(-forward, right), -forward], axis=1)
    axis = np.cross([0.0, 0.0, -1.0], forward)  # Rodrigues: rotate (0, 0, -1) onto forward
    sin, cos = np.linalg.norm(axis), -forward[2]
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]]) / max(sin, 1e-12)
    return np.eye(3) + sin * k + (1 - cos) * k @ k


def roll_matrix(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class Distraction:
    """The distraction state of one env (camera, colours, background). The env calls `reset` after the physics
    reset, `advance(n)` with the number of even control steps in an agent step, and `apply` before rendering."""

    def __init__(self, physics, domain: str, camera_id: int, backgrounds: Backgrounds):
        import mujoco

        model, x = physics.model, backgrounds.intensity
        self.domain, self.camera_id, self.backgrounds = domain, camera_id, backgrounds
        mode = int(model.cam_mode[camera_id])
        if mode not in (CAMERA_FIXED, CAMERA_TRACKCOM):
            raise ConfigError(
                f"distracting_cs moves fixed or centre-of-mass-tracking cameras; camera_id {camera_id} "
                f"of {domain} has mode {mujoco.mjtCamLight(mode).name}"
            )
        self.tracking = mode == CAMERA_TRACKCOM
        self.keep_horizon = domain != "reacher"
        self.angle_delta, self.roll_delta = np.pi / 2 * x, np.pi / 2 * x
        self.zoom_in, self.zoom_out = 0.5 * x, 1.5 * x
        self.max_vel, self.vel_std = 0.4 * x, 0.1 * x
        self.max_roll_vel, self.roll_std = np.pi / 50 * x, np.pi / 300 * x
        self.color_delta, self.color_std = x, 0.03 * x

        grid = mujoco.mj_name2id(model.ptr, mujoco.mjtObj.mjOBJ_MATERIAL, "grid")  # the floor's material
        model.mat_rgba[grid, 3] = ground_alpha(domain)
        self.default_rgb = model.mat_rgba[:, :3].copy()
        self.rgb_low = np.clip(self.default_rgb - self.color_delta, 0, 1)
        self.rgb_high = np.clip(self.default_rgb + self.color_delta, 0, 1)
        # The sky cube becomes one square image repeated on its six faces (MuJoCo's layout when width == height).
        self._sky = mujoco.mj_name2id(model.ptr, mujoco.mjtObj.mjOBJ_TEXTURE, "skybox")
        size = backgrounds.size
        if size * size > model.tex_width[self._sky] * model.tex_height[self._sky]:
            raise ConfigError(f"image_size {size // 2} is too large for the {domain} sky texture")
        model.tex_width[self._sky] = model.tex_height[self._sky] = size
        self._sky_data = slice(model.tex_adr[self._sky], model.tex_adr[self._sky] + size * size * 3)
        self._shown = None  # (video, frame) now in the sky texture

    # ------------------------------------------------------------------ episode start
    def reset(self, physics, rng: np.random.Generator):
        self.video_index = int(rng.integers(len(self.backgrounds)))
        self.clip = self.backgrounds.clip(self.video_index)
        self.frame_index, self.frame_step = int(rng.integers(len(self.clip))), int(rng.choice([-1, 1]))

        # Camera ranges around the default pose of this episode's start (relative to the agent if tracking).
        data = physics.named.data
        position = data.cam_xpos[self.camera_id] - (data.subtree_com[1] if self.tracking else 0)
        radius, h_angle, v_angle = cart_to_sphere(position)
        low = np.array([radius * (1 - self.zoom_in), h_angle - self.angle_delta, v_angle - self.angle_delta])
        high = np.array([radius * (1 + self.zoom_out), h_angle + self.angle_delta, v_angle + self.angle_delta])
        if self.keep_horizon:  # stay above the floor (v <= pi/2) and on the default side (h in [-pi, 0])
            low[1:], high[1:] = np.maximum(low[1:], [-np.pi, 0.0]), np.minimum(high[1:], [0.0, np.pi / 2])
        self.sphere_low, self.sphere_high = low, high
        self.vel_scale = radius / 4  # the original's velocities are for a camera 4 units away
        self.target = self._default_target(physics)
        self.sphere = rng.uniform(self.sphere_low, self.sphere_high)
        self.roll = rng.uniform(-self.roll_delta, self.roll_delta)
        direction = rng.standard_normal(3)
        self.vel = direction / np.linalg.norm(direction) * rng.uniform(0, self.max_vel)
        self.roll_vel = rng.uniform(-self.max_roll_vel, self.max_roll_vel)
        self._walk_camera(rng)  # the original moves the camera once at reset

        self.rgb = rng.uniform(self.rgb_low, self.rgb_high)
        self.apply(physics)

    def _default_target(self, physics) -> np.ndarray:
        """The point the default camera looks at, as far away as the agent (from the physics' own camera pose)."""
        data = physics.named.data
        distance = np.linalg.norm(data.cam_xpos[self.camera_id] - data.subtree_com[1])
        return data.cam_xpos[self.camera_id] + data.cam_xmat[self.camera_id].reshape(3, 3) @ [0, 0, -distance]

    # ------------------------------------------------------------------ dynamics
    def _walk_camera(self, rng: np.random.Generator):
        self.vel = self.vel + rng.standard_normal(3) * self.vel_std * self.vel_scale
        self.roll_vel = np.clip(self.roll_vel + rng.standard_normal() * self.roll_std, -self.max_roll_vel, self.max_roll_vel)
        speed, max_speed = np.linalg.norm(self.vel), self.max_vel * self.vel_scale
        if speed > max_speed:
            self.vel *= max_speed / speed
        here = sphere_to_cart(*self.sphere)
        self.sphere = np.clip(cart_to_sphere(here + self.vel), self.sphere_low, self.sphere_high)
        self.vel = sphere_to_cart(*self.sphere) - here  # what the clipped move actually was
        roll = np.clip(self.roll + self.roll_vel, -self.roll_delta, self.roll_delta)
        self.roll_vel, self.roll = roll - self.roll, roll

    def advance(self, rng: np.random.Generator, n: int):
        """n steps of the random walks (camera, colours) and of the video."""
        for _ in range(n):
            self._walk_camera(rng)
            kick = rng.standard_normal(self.rgb.shape) * self.color_std
            self.rgb = np.clip(self.rgb + kick, self.rgb_low, self.rgb_high)
            self.frame_index += self.frame_step
            if self.frame_index <= 0:  # bounce at the ends, as the original
                self.frame_index, self.frame_step = 0, abs(self.frame_step)
            if self.frame_index >= len(self.clip):
                self.frame_index, self.frame_step = len(self.clip) - 1, -abs(self.frame_step)

    # ------------------------------------------------------------------ to MuJoCo
    def camera_pose(self, physics) -> tuple[np.ndarray, np.ndarray]:
        """World position and orientation matrix of the moved camera, for the physics' current state."""
        position = sphere_to_cart(*self.sphere)
        target = self.target
        if self.tracking:
            position = position + physics.named.data.subtree_com[1]
            target = self._default_target(physics)
        return position, look_at(target, position, self.keep_horizon) @ roll_matrix(self.roll)

    def apply(self, physics):
        """Write the state into the model and data: colours, camera pose (the physics recomputes the default
        pose at every step, so this runs after the last physics step, before rendering) and the sky frame."""
        import mujoco

        model = physics.model
        model.mat_rgba[:, :3] = self.rgb
        position, xmat = self.camera_pose(physics)
        physics.data.cam_xpos[self.camera_id] = position
        physics.data.cam_xmat[self.camera_id] = xmat.ravel()
        if self._shown != (self.video_index, self.frame_index):
            model.tex_data[self._sky_data] = self.clip[self.frame_index].ravel()
            with physics.contexts.gl.make_current() as ctx:
                ctx.call(mujoco.mjr_uploadTexture, model.ptr, physics.contexts.mujoco.ptr, self._sky)
            self._shown = (self.video_index, self.frame_index)
