"""DeepMind Control from pixels, with the DMC-GB colour and video distractions.

    import envs
    env = envs.make_env("walker-walk", seed=1, mode="video_hard")
    obs, info = env.reset()                       # uint8 (9, 84, 84): the last 3 RGB frames
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    frame = env.render()                          # latest frame, HWC uint8 (for videos)

Env ids are `domain-task` (split at the first '-'), any dm_control suite task: `envs.env_ids()`.
One agent step = `action_repeat` control steps (default 8 cartpole, 2 finger, 4 otherwise) with
rewards summed, then one render from camera 0 (2 for quadruped). Episodes end only by the time
limit (1000 control steps): `truncated=True`.

Modes (`envs.MODES`, the DMC-GB modes evaluated by default; `envs.ALL_MODES` adds the three DCS levels):
  train       standard DMC visuals.
  color_easy  at every reset the agent's materials, the skybox and the floor grid get
  color_hard  default colour + N(0, sigma) per channel, clipped to [0, 1]; sigma 0.1 / 0.2.
              Materials are edited in `model.mat_rgba`, the two textures in `model.tex_data`
              (re-uploaded to the GL context), so steps cost the same as in train.
  video_easy  pixels where the renderer's segmentation sees no geom (the sky) show a background
              video frame; the floor stays.
  video_hard  the floor planes/heightfields are hidden as well, so only the agent (and other
              non-floor geoms) remain. Hiding them also skips the floor's reflection pass, which
              pays for the extra segmentation render.
  Video frame = agent step index modulo the clip length. Videos are used in numeric order, one per
  episode, cycling, and the first episode shows video 1 (the second file): DMC-GB's order, for every
  seed, so that all seeds and methods are evaluated on the same videos. Backgrounds: `envs.backgrounds`.
  distracting_cs_easy, distracting_cs_medium, distracting_cs_hard: the Distracting Control Suite at
  intensity 0.1 / 0.2 / 0.3 (moving camera, drifting colours, video in the sky; `envs.distracting`);
  `make_env(..., mode="distracting_cs", intensity=x)` for any x in (0, 1]. Domains reacher, cartpole,
  finger, cheetah, ball_in_cup, walker; videos procedural, or DAVIS 2017 from `davis_dir`.

`reset(options={"track_agent": True})` also records, for that episode, which pixels of each stacked
frame show the agent (`agent_masks()`; the agent = what video_hard keeps: every geom but the floor,
from the renderer's segmentation), for measuring where a saliency map lands.

`make_env(seed)` seeds the task's initial states, the colour draws and the distracting_cs draws;
`reset(seed=s)` reseeds them and restarts the video order. Every bad argument raises `ConfigError`
with a one-line message.

`quiet_worker` is the AsyncVectorEnv worker the training scripts run their eval envs in.
"""

from __future__ import annotations

import collections
import difflib
import logging
import math
import os
import signal

# Headless default; must be set before dm_control is first imported (it picks the GL backend then).
os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402

MODES = ("train", "color_easy", "color_hard", "video_easy", "video_hard")
DISTRACTING_CS_MODES = ("distracting_cs_easy", "distracting_cs_medium", "distracting_cs_hard")
ALL_MODES = MODES + DISTRACTING_CS_MODES

# dm_control's cheetah model uses MuJoCo's deprecated `settotalmass`: MuJoCo warns through absl at
# every model load (each env, each worker). Drop that one message, nothing else.
logging.getLogger("absl").addFilter(lambda record: "'settotalmass' is deprecated" not in record.getMessage())


class ConfigError(ValueError):
    """A bad argument or environment setup; the message is one line naming what to fix."""


from envs import distracting  # noqa: E402
from envs.backgrounds import OverlayImages, VideoSource  # noqa: E402,F401  (needs ConfigError)

# DMC defaults (dm_control/suite/common/materials.xml and skybox.xml) and DMC-GB's noise levels.
DEFAULT_COLORS = {"self": (0.7, 0.5, 0.3), "skybox": (0.4, 0.6, 0.8), "grid": (0.1, 0.2, 0.3)}
EFFECTOR_DEFAULT = np.array([0.7, 0.4, 0.2])
COLOR_SIGMA = {"color_easy": 0.1, "color_hard": 0.2}


def gl_error_message(err: BaseException) -> str:
    """The one-line advice shown when MuJoCo cannot get an OpenGL context."""
    detail = " ".join(f"{type(err).__name__}: {err}".split())
    return (
        f"MuJoCo could not render with MUJOCO_GL={os.environ.get('MUJOCO_GL')} ({detail}); "
        "for EGL install `libegl1 libgl1-mesa-dri` (Debian/Ubuntu), or use software rendering "
        "with MUJOCO_GL=osmesa after installing `libosmesa6`"
    )


def _suite():
    """dm_control.suite, imported lazily: with a broken GL setup the import itself can fail."""
    try:
        from dm_control import suite
    except ModuleNotFoundError:
        raise
    except Exception as e:
        raise ConfigError(gl_error_message(e)) from e
    return suite


def _make_camera(physics, image_size: int, camera_id: int):
    """Persistent camera (reusing one Camera saves ~2 ms a frame over `physics.render`)."""
    from dm_control.mujoco.engine import Camera

    return Camera(physics, height=image_size, width=image_size, camera_id=camera_id)


def env_ids() -> list[str]:
    return [f"{domain}-{task}" for domain, task in _suite().ALL_TASKS]


def _parse_id(env_id: str) -> tuple[str, str]:
    domain, _, task = str(env_id).partition("-")
    if (domain, task) not in _suite().ALL_TASKS:
        ids = env_ids()
        close = difflib.get_close_matches(str(env_id), ids, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ConfigError(f"unknown env id {env_id!r}{hint}; valid ids: {', '.join(ids)}")
    return domain, task


def default_action_repeat(env_id: str) -> int:
    return {"cartpole": 8, "finger": 2}.get(_parse_id(env_id)[0], 4)


def draw_colors(rng: np.random.Generator, sigma: float) -> dict[str, np.ndarray]:
    """Agent ('self'), skybox and floor-grid colours: default + N(0, sigma) per channel, clipped."""
    return {k: np.clip(np.array(d) + rng.normal(0.0, sigma, 3), 0.0, 1.0) for k, d in DEFAULT_COLORS.items()}


def check_args(
    env_id: str,
    mode: str = "train",
    *,
    action_repeat: int | None = None,
    frame_stack: int = 3,
    image_size: int = 84,
    video_dir: str | None = None,
    intensity: float | None = None,
    davis_dir: str | None = None,
):
    """The checks `make_env` makes before MuJoCo starts (ConfigError on bad input), for callers
    that build envs in worker processes. Returns (domain, task, action_repeat, background source):
    a `VideoSource` (video modes), a `distracting.Backgrounds` (distracting_cs modes) or None."""
    domain, task = _parse_id(env_id)
    if mode not in ALL_MODES + ("distracting_cs",):
        raise ConfigError(f"unknown mode {mode!r}; valid modes: {', '.join(ALL_MODES)}, distracting_cs (with intensity=x)")
    action_repeat = default_action_repeat(env_id) if action_repeat is None else action_repeat
    for name, value in (("action_repeat", action_repeat), ("frame_stack", frame_stack), ("image_size", image_size)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if not mode.startswith("distracting_cs"):
        if intensity is not None:
            raise ConfigError(f"intensity is for mode 'distracting_cs' only, not {mode!r}")
        videos = VideoSource(mode, image_size, video_dir) if mode.startswith("video") else None
        return domain, task, int(action_repeat), videos
    if domain not in distracting.DOMAINS:
        raise ConfigError(f"{mode} supports the domains {', '.join(distracting.DOMAINS)} (as the original), not {domain!r}")
    if mode != "distracting_cs":
        if intensity is not None:
            raise ConfigError(
                f"mode {mode!r} has intensity {distracting.LEVELS[mode]}; pass intensity only with mode 'distracting_cs'"
            )
        intensity = distracting.LEVELS[mode]
    elif not isinstance(intensity, (int, float, np.number)) or not 0 < intensity <= 1:
        raise ConfigError(f"mode 'distracting_cs' needs an intensity in (0, 1], got {intensity!r}")
    return domain, task, int(action_repeat), distracting.Backgrounds(float(intensity), 2 * image_size, davis_dir)


def make_env(
    env_id: str,
    seed: int,
    mode: str = "train",
    *,
    action_repeat: int | None = None,
    frame_stack: int = 3,
    image_size: int = 84,
    video_dir: str | None = None,
    intensity: float | None = None,
    davis_dir: str | None = None,
    camera_id: int | None = None,
) -> gym.Env:
    """A pixel DMC env (see the module docstring). Arguments are checked before MuJoCo starts.

    `video_dir` is used by the video modes only (None: procedural videos), `davis_dir` (a DAVIS 2017
    folder; None: procedural videos) by the distracting_cs modes only, `intensity` by mode
    "distracting_cs" only; `camera_id` None picks camera 0 (2 for quadruped)."""
    domain, task, action_repeat, backgrounds = check_args(
        env_id,
        mode,
        action_repeat=action_repeat,
        frame_stack=frame_stack,
        image_size=image_size,
        video_dir=video_dir,
        intensity=intensity,
        davis_dir=davis_dir,
    )
    return DMCEnv(
        domain,
        task,
        seed,
        mode,
        action_repeat,
        int(frame_stack),
        int(image_size),
        backgrounds,
        (2 if domain == "quadruped" else 0) if camera_id is None else camera_id,
    )


class DMCEnv(gym.Env):
    """Gymnasium view of one dm_control task from pixels. Build it with `make_env`.

    Extra attributes: `physics` (the dm_control Physics, e.g. to inspect the state),
    `mode`, `action_repeat`, `camera_id`, `max_episode_steps` (agent steps), `colors` (the colours
    drawn at the last reset in the colour modes, else None), `video_index` (the background video of
    the current episode), `distraction` (the `distracting.Distraction` state in the distracting_cs
    modes, else None).
    """

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, domain, task, seed, mode, action_repeat, frame_stack, image_size, backgrounds, camera_id):
        self.mode, self.action_repeat, self.camera_id = mode, action_repeat, camera_id
        self.render_mode = "rgb_array"
        self._videos = backgrounds if isinstance(backgrounds, VideoSource) else None
        self._env = _suite().load(domain, task, task_kwargs={"random": seed})
        import mujoco  # after dm_control, which reports GL setup errors (see _suite)

        physics = self.physics
        model = physics.model
        # real-time playback rate of agent steps, for video capture
        self.metadata = {**self.metadata, "render_fps": round(1 / (self._env.control_timestep() * action_repeat))}

        spec = self._env.action_spec()
        self.action_space = gym.spaces.Box(-1.0, 1.0, spec.shape, np.float32)
        # Suite actions are already in [-1, 1]; map anyway where a task differs (quadruped),
        # treating huge bounds (lqr's +-1e10) as "unbounded": pass the action through.
        lo, hi = np.broadcast_to(spec.minimum, spec.shape), np.broadcast_to(spec.maximum, spec.shape)
        self._lo, self._hi = np.where(np.abs(lo) < 1e6, lo, -1.0), np.where(np.abs(hi) < 1e6, hi, 1.0)
        self.observation_space = gym.spaces.Box(0, 255, (3 * frame_stack, image_size, image_size), np.uint8)
        self._frames = collections.deque(maxlen=frame_stack)
        step_limit = self._env._step_limit  # control steps per episode (inf: no time limit)
        self.max_episode_steps = math.ceil(step_limit / action_repeat) if math.isfinite(step_limit) else None

        if not 0 <= camera_id < model.ncam:
            raise ConfigError(f"camera_id {camera_id} out of range: {domain} has cameras 0..{model.ncam - 1}")
        if image_size > min(model.vis.global_.offwidth, model.vis.global_.offheight):
            raise ConfigError(
                f"image_size {image_size} exceeds the {domain} offscreen buffer "
                f"({model.vis.global_.offwidth}x{model.vis.global_.offheight})"
            )
        floor = np.isin(model.geom_type, [mujoco.mjtGeom.mjGEOM_PLANE, mujoco.mjtGeom.mjGEOM_HFIELD])
        self._floor_ids = np.flatnonzero(floor)
        self._agent_masks = None  # deque of (H, W) bool while an episode tracks the agent
        if mode == "video_hard":  # hide the floor (alpha 0 geoms are not drawn, nor reflected)
            model.geom_matid[floor] = -1
            model.geom_rgba[floor, 3] = 0.0
        try:
            self._camera = _make_camera(physics, image_size, camera_id)
            self._frame = self._camera.render().copy()  # also the first GL call: fail here, clearly
        except Exception as e:
            raise ConfigError(gl_error_message(e)) from e
        self.distraction = None
        if isinstance(backgrounds, distracting.Backgrounds):
            self.distraction = distracting.Distraction(physics, domain, camera_id, backgrounds)

        if mode in COLOR_SIGMA:
            self._mat = {
                n: mujoco.mj_name2id(model.ptr, mujoco.mjtObj.mjOBJ_MATERIAL, n)
                for n in ("self", "self_default", "effector", "effector_default")
            }
            self._tex = {}  # name -> (texture id, slice of tex_data, original bytes (N, 3))
            for name in ("skybox", "grid"):
                i = mujoco.mj_name2id(model.ptr, mujoco.mjtObj.mjOBJ_TEXTURE, name)
                if i >= 0 and model.tex_nchannel[i] == 3:
                    n = model.tex_width[i] * model.tex_height[i] * 3
                    sl = slice(model.tex_adr[i], model.tex_adr[i] + n)
                    self._tex[name] = (i, sl, model.tex_data[sl].reshape(-1, 3).copy())
        self.colors = None
        self._seed(seed)

    @property
    def physics(self):
        return self._env.physics

    def _seed(self, seed):
        self._env.task.random.seed(seed)  # initial states
        self._rng = np.random.default_rng(seed)  # colour and distracting_cs draws
        self._episode = 0

    def _set_colors(self, colors):
        """Recolour the agent materials and re-generate the skybox / grid textures in place."""
        import mujoco

        model = self.physics.model
        shift = colors["self"] - DEFAULT_COLORS["self"]  # effector parts keep their offset to self
        for name, i in self._mat.items():
            if i >= 0:
                base = EFFECTOR_DEFAULT if name.startswith("effector") else np.array(DEFAULT_COLORS["self"])
                model.mat_rgba[i, :3] = np.clip(base + shift, 0, 1)
        v = np.arange(256, dtype=np.float64)[:, None]
        for name, (texid, sl, orig) in self._tex.items():
            default, new = np.array(DEFAULT_COLORS[name]), colors[name]
            if name == "skybox":
                # builtin gradient from rgb1 to black: every pixel is proportional to rgb1, and
                # the random white star marks (255, never reached by the gradient) stay white.
                lut = np.clip(np.round(v * new / default), 0, 255)
                lut[255] = 255
            else:
                # builtin checker: exactly two colours, rgb1 and rgb2 = rgb1 + .1 (edge marks use
                # rgb2); MuJoCo truncates to bytes.
                lut = np.repeat(v, 3, axis=1)
                cols = np.arange(3)
                lut[(default * 255).astype(int), cols] = (new * 255).astype(int)
                lut[((default + 0.1) * 255).astype(int), cols] = (np.clip(new + 0.1, 0, 1) * 255).astype(int)
            model.tex_data[sl] = lut.astype(np.uint8)[orig, np.arange(3)].ravel()
            with self.physics.contexts.gl.make_current() as ctx:
                ctx.call(mujoco.mjr_uploadTexture, model.ptr, self.physics.contexts.mujoco.ptr, texid)
        self.colors = colors

    def _render(self) -> np.ndarray:
        rgb = self._camera.render().copy()  # copy: the camera reuses its buffer
        if self._videos is not None or self._agent_masks is not None:
            segmentation = self._camera.render(segmentation=True)  # (H, W, 2): object id (-1: none), object type
        if self._videos is not None:
            background = segmentation[..., 0] == -1
            frame = self._clip[self._t % len(self._clip)]
            rgb[background] = frame[background]
        if self._agent_masks is not None:  # the agent: any geom but the floor (what video_hard keeps)
            import mujoco

            is_geom = segmentation[..., 1] == mujoco.mjtObj.mjOBJ_GEOM
            self._agent_masks.append(is_geom & ~np.isin(segmentation[..., 0], self._floor_ids))
        self._frame = rgb
        return rgb

    def agent_masks(self) -> np.ndarray:
        """Which pixels of each stacked frame show the agent, bool (frame_stack, H, W), in an episode
        reset with options={"track_agent": True} (one segmentation render per step more)."""
        if self._agent_masks is None:
            raise RuntimeError("agent_masks() needs an episode reset with options={'track_agent': True}")
        return np.stack(self._agent_masks)

    def _obs(self) -> np.ndarray:
        return np.concatenate([f.transpose(2, 0, 1) for f in self._frames])

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._seed(seed)
        if self.mode in COLOR_SIGMA:
            self._set_colors(draw_colors(self._rng, COLOR_SIGMA[self.mode]))
        if self._videos is not None:  # DMC-GB's order: video 1 first (it steps the index before loading)
            self.video_index = (self._episode + 1) % len(self._videos)
            self._clip = self._videos.clip(self.video_index)
        self._episode += 1
        self._t = self._control_steps = 0
        track = bool((options or {}).get("track_agent"))
        self._agent_masks = collections.deque(maxlen=self._frames.maxlen) if track else None
        self._env.reset()
        if self.distraction is not None:
            self.distraction.reset(self.physics, self._rng)
            self.video_index = self.distraction.video_index
        frame = self._render()
        self._frames.extend([frame] * self._frames.maxlen)
        if track:  # the first frame repeats in the stack, so does its mask
            self._agent_masks.extend([self._agent_masks[-1]] * (self._frames.maxlen - 1))
        return self._obs(), {}

    def step(self, action):
        a = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        a = self._lo + (a + 1.0) * 0.5 * (self._hi - self._lo)
        reward = 0.0
        before = self._control_steps
        for _ in range(self.action_repeat):
            ts = self._env.step(a)
            self._control_steps += 1
            reward += ts.reward or 0.0
            if ts.last():
                break
        self._t += 1
        if self.distraction is not None:  # DMC-GB advances them on every even control step
            self.distraction.advance(self._rng, self._control_steps // 2 - before // 2)
            self.distraction.apply(self.physics)
        self._frames.append(self._render())
        terminated = ts.last() and ts.discount == 0.0  # a task's own termination (rare in the suite)
        truncated = ts.last() and not terminated  # the time limit
        return self._obs(), float(reward), bool(terminated), bool(truncated), {}

    def render(self) -> np.ndarray:
        return self._frame

    def close(self):
        self._camera = None


# ----------------------------------------------------------------------------- eval-env workers
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class _ParentPipe:
    """A worker's end of its pipe: once the parent is gone (EOF, broken pipe), exit quietly
    instead of reporting the error to nobody (SystemExit passes gymnasium's `except Exception`)."""

    def __init__(self, pipe):
        self.pipe = pipe

    def recv(self):
        try:
            return self.pipe.recv()
        except (EOFError, OSError):
            raise SystemExit(0) from None

    def send(self, obj):
        try:
            self.pipe.send(obj)
        except OSError:  # BrokenPipeError, ConnectionResetError
            raise SystemExit(0) from None


def quiet_worker(index, env_fn, pipe, *args):
    """gymnasium's AsyncVectorEnv worker (`worker=envs.quiet_worker`), minus the noise: it ignores
    SIGINT, SIGTERM and SIGUSR1 (a Ctrl-C reaches the whole process group; the parent handles it
    and closes its workers) and exits silently when the parent dies, where gymnasium's worker
    prints EOFError / BrokenPipeError tracebacks."""
    from gymnasium.vector.async_vector_env import _async_worker

    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    _async_worker(index, env_fn, _ParentPipe(pipe), *args)
