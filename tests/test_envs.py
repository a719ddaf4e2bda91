"""Tests of envs/: pixel DMC wrappers, distraction modes, background and overlay sources.

Rendering costs ~20 ms a frame on CPU whatever the size (the shadow map dominates), so tests
take few steps; the long-episode checks stub the renderer out.
"""

import math
import os
import time

import mujoco
import numpy as np
import pytest
from PIL import Image

import envs
from envs.backgrounds import VideoSource

FLOOR_TYPES = [mujoco.mjtGeom.mjGEOM_PLANE, mujoco.mjtGeom.mjGEOM_HFIELD]


def rollout(env, seed, n, action_seed=0):
    """Reset with `seed`, take `n` seeded random steps; return the observations."""
    rng = np.random.default_rng(action_seed)
    obs = [env.reset(seed=seed)[0]]
    for _ in range(n):
        obs.append(env.step(rng.uniform(-1, 1, env.action_space.shape))[0])
    return obs


def regions(env):
    """Sky / floor / agent pixel masks of the env's current physics state, in train visuals."""
    size = env.observation_space.shape[-1]
    seg = env.physics.render(size, size, camera_id=env.camera_id, segmentation=True)
    ids, types = seg[..., 0], seg[..., 1]
    sky = ids == -1
    floor = (types == mujoco.mjtObj.mjOBJ_GEOM) & np.isin(env.physics.model.geom_type[ids], FLOOR_TYPES)
    return sky, floor & ~sky, ~sky & ~floor


@pytest.fixture(scope="module")
def train_env():
    return envs.make_env("cheetah-run", seed=0)


# ----------------------------------------------------------------------------- interface
def test_spaces_shapes_and_stack(train_env):
    env = train_env
    assert env.observation_space.shape == (9, 84, 84) and env.observation_space.dtype == np.uint8
    assert env.action_space.shape == (6,) and env.action_space.dtype == np.float32
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    obs, info = env.reset(seed=0)
    assert obs.shape == (9, 84, 84) and obs.dtype == np.uint8 and env.observation_space.contains(obs)
    # reset: the first frame repeated; it is what render() shows (HWC)
    assert np.array_equal(obs[0:3], obs[3:6]) and np.array_equal(obs[3:6], obs[6:9])
    assert np.array_equal(obs[6:9], env.render().transpose(2, 0, 1))
    obs1 = env.step(np.ones(6))[0]
    assert np.array_equal(obs1[:6], obs[3:])  # oldest dropped, others shifted
    assert not np.array_equal(obs1[6:], obs[6:])
    assert np.array_equal(obs1[6:], env.render().transpose(2, 0, 1))
    obs2 = env.step(-np.ones(6))[0]
    assert np.array_equal(obs2[:6], obs1[3:]) and np.array_equal(obs2[0:3], obs[0:3])


def test_frame_stack_and_size_options():
    env = envs.make_env("pendulum-swingup", seed=0, frame_stack=2, image_size=32)
    obs = env.reset()[0]
    assert obs.shape == (6, 32, 32) == env.observation_space.shape
    assert env.render().shape == (32, 32, 3)


def test_defaults_per_domain():
    assert envs.default_action_repeat("cartpole-swingup") == 8
    assert envs.default_action_repeat("finger-spin") == 2
    assert envs.default_action_repeat("walker-walk") == 4
    assert envs.default_action_repeat("ball_in_cup-catch") == 4
    ids = envs.env_ids()
    assert "ball_in_cup-catch" in ids and "cheetah-run" in ids and len(ids) == len(set(ids)) > 50
    assert envs.make_env("quadruped-walk", seed=0, image_size=16).camera_id == 2
    assert envs.make_env("walker-walk", seed=0, image_size=16, camera_id=1).camera_id == 1


def test_action_repeat_sums_rewards_like_raw_dm_control():
    from dm_control import suite

    env = envs.make_env("walker-walk", seed=3, image_size=16)
    raw = suite.load("walker", "walk", task_kwargs={"random": 3})
    env.reset()
    raw.reset()
    rng = np.random.default_rng(0)
    rewards = []
    for _ in range(5):
        a = rng.uniform(-1, 1, 6)
        expected = sum(raw.step(a).reward for _ in range(4))
        _, r, *_ = env.step(a)
        assert r == pytest.approx(expected, abs=1e-9)
        rewards.append(r)
    assert np.array_equal(env.physics.data.qpos, raw.physics.data.qpos)
    assert max(rewards) > 0.01  # a non-trivial comparison


@pytest.mark.parametrize(
    "env_id, length, render", [("cartpole-swingup", 125, True), ("finger-spin", 500, False), ("cheetah-run", 250, False)]
)
def test_episode_length(env_id, length, render):
    env = envs.make_env(env_id, seed=0, image_size=16)
    assert env.max_episode_steps == length  # what the training scripts size the replay buffer with
    if not render:  # same step logic, without paying ~20 ms a frame
        frame = env.render()
        env._render = lambda: frame
    env.reset()
    flags = [env.step(env.action_space.sample())[2:4] for _ in range(length)]
    assert all(f == (False, False) for f in flags[:-1])
    assert flags[-1] == (False, True)  # time limit: truncated, not terminated


def test_action_bounds_are_mapped():
    env = envs.make_env("quadruped-walk", seed=0, image_size=16)
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    spec = env._env.action_spec()
    env.reset()
    env.step(np.ones(12))
    assert np.allclose(env.physics.data.ctrl, spec.maximum)
    env.step(-np.ones(12) * 5)  # out of range is clipped
    assert np.allclose(env.physics.data.ctrl, spec.minimum)


# ----------------------------------------------------------------------------- seeding
def test_determinism_per_seed():
    a = envs.make_env("cheetah-run", seed=7, mode="video_hard", image_size=48)
    b = envs.make_env("cheetah-run", seed=7, mode="video_hard", image_size=48)
    oa, ob = rollout(a, None, 2), rollout(b, None, 2)
    assert all(np.array_equal(x, y) for x, y in zip(oa, ob))
    oc = rollout(b, 8, 2)  # reseeding at reset: a different initial state
    assert not np.array_equal(oa[0], oc[0])
    od = rollout(b, 7, 2)  # back to seed 7: identical to a fresh env
    assert all(np.array_equal(x, y) for x, y in zip(oa, od))


def test_videos_play_in_numeric_order_from_video_1_for_every_seed():
    """DMC-GB's order (its VideoWrapper steps the index before loading): episode k shows video (k + 1) mod N,
    whatever the seed, so that every seed and method is evaluated on the same videos."""
    for seed in (0, 7):
        env = envs.make_env("cartpole-balance", seed=seed, mode="video_easy", image_size=8)
        env._render = lambda: np.zeros((8, 8, 3), np.uint8)  # the order only; no need to draw
        order = []
        for _ in range(11):
            env.reset()
            order.append(env.video_index)
        assert order == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
        env.reset(seed=3)  # reseeding restarts the order
        assert env.video_index == 1


def test_colour_draws_are_seeded():
    a = envs.make_env("cheetah-run", seed=1, mode="color_hard", image_size=16)
    b = envs.make_env("cheetah-run", seed=1, mode="color_hard", image_size=16)
    a.reset(), b.reset()
    assert all(np.array_equal(a.colors[k], b.colors[k]) for k in a.colors)
    first = a.colors
    a.reset()
    assert not np.array_equal(first["self"], a.colors["self"])  # a new draw at every reset
    a.reset(seed=2)
    assert not np.array_equal(first["self"], a.colors["self"])
    a.reset(seed=1)
    assert np.array_equal(first["skybox"], a.colors["skybox"])


# ----------------------------------------------------------------------------- modes
def _pair(mode, seed=0, steps=2):
    """A train env and a `mode` env driven through the same seed and actions (same physics)."""
    train = envs.make_env("cheetah-run", seed=seed)
    other = envs.make_env("cheetah-run", seed=seed, mode=mode)
    ot, oo = rollout(train, seed, steps)[-1], rollout(other, seed, steps)[-1]
    assert np.array_equal(train.physics.data.qpos, other.physics.data.qpos)
    sky, floor, agent = regions(train)
    assert sky.sum() > 500 and floor.sum() > 100 and agent.sum() > 100
    changed = np.any(ot[6:] != oo[6:], axis=0)
    return changed, sky, floor, agent, train, other


def _shows_video(env, mask, t):
    """Fraction of `mask` pixels of the env's last frame that equal frame t of its video."""
    expected = VideoSource(env.mode, 84).clip(env.video_index)[t]
    return np.all(env.render() == expected, axis=-1)[mask].mean()


def test_video_easy_replaces_sky_only():
    changed, sky, floor, agent, _, env = _pair("video_easy")
    assert changed[sky].mean() > 0.9 and _shows_video(env, sky, t=2) > 0.99
    assert not changed[floor | agent].any()  # same scene; only the sky pixels are replaced


def test_video_hard_keeps_only_the_agent():
    changed, sky, floor, agent, _, env = _pair("video_hard")
    assert changed[sky].mean() > 0.9 and changed[floor].mean() > 0.9
    assert _shows_video(env, sky | floor, t=2) > 0.97
    # Agent pixels are rendered identically; only anti-aliased pixels at the agent's border
    # with the (now hidden) floor may differ, so the agent's interior must match exactly.
    interior = agent.copy()
    interior[1:-1, 1:-1] &= agent[:-2, 1:-1] & agent[2:, 1:-1] & agent[1:-1, :-2] & agent[1:-1, 2:]
    assert interior.sum() > 50 and not changed[interior].any()
    assert changed[agent].mean() < 0.1


@pytest.mark.parametrize("mode", ["train", "color_hard", "video_easy", "video_hard", "distracting_cs_hard"])
def test_agent_masks_are_the_agent_pixels_of_each_stacked_frame(mode):
    """reset(options={"track_agent": True}): agent_masks() holds, per stacked frame, the pixels of
    every geom but the floor (what video_hard keeps), from the renderer's segmentation, frame by
    frame as the stack moves; the first frame's mask repeats as the frame does. Off by default."""
    env = envs.make_env("cheetah-run", seed=0, mode=mode, image_size=48)
    env.reset(seed=0, options={"track_agent": True})
    first = regions(env)[2]
    masks = [env.agent_masks()]
    assert masks[0].shape == (3, 48, 48) and masks[0].dtype == bool
    assert all(np.array_equal(m, first) for m in masks[0])
    rng = np.random.default_rng(0)
    for _ in range(3):
        env.step(rng.uniform(-1, 1, env.action_space.shape))
        masks.append(env.agent_masks())
        assert np.array_equal(masks[-1][-1], regions(env)[2])  # the newest frame: this state's agent
        assert np.array_equal(masks[-1][:2], masks[-2][1:])  # the older ones moved along with the frames
    assert 0.02 < masks[-1].mean() < 0.3 and not np.array_equal(masks[-1][0], masks[-1][-1])  # the agent moved
    env.reset()
    with pytest.raises(RuntimeError, match="track_agent"):
        env.agent_masks()


def test_agent_masks_match_what_video_hard_keeps():
    env = envs.make_env("walker-walk", seed=3, mode="video_hard", image_size=64)
    env.reset(options={"track_agent": True})
    env.step(np.zeros(env.action_space.shape))
    kept = env._camera.render(segmentation=True)[..., 0] != -1  # video_hard shows its video wherever no geom is drawn
    assert kept.sum() > 100 and np.array_equal(env.agent_masks()[-1], kept)


def test_background_moves_every_step():
    env = envs.make_env("cheetah-run", seed=0, mode="video_easy", image_size=48)
    obs = rollout(env, 0, 2)[-1]
    sky = regions(env)[0]
    assert np.abs(obs[6:].astype(int) - obs[3:6])[:, sky].mean() > 1.0


@pytest.mark.filterwarnings("ignore:compiler attribute 'settotalmass'")
@pytest.mark.parametrize("mode", ["color_easy", "color_hard"])
def test_colour_modes_change_colours(mode):
    changed, sky, floor, agent, train, other = _pair(mode, steps=0)
    assert changed[sky].mean() > 0.5 and changed[agent].mean() > 0.5
    # the textures equal what MuJoCo itself builds from the drawn colours
    from dm_control.suite import cheetah

    c = other.colors
    spec = mujoco.MjSpec.from_string(*cheetah.get_model_and_assets())
    spec.texture("skybox").rgb1 = c["skybox"]
    grid2 = np.clip(c["grid"] + 0.1, 0, 1)
    spec.texture("grid").rgb1, spec.texture("grid").rgb2, spec.texture("grid").markrgb = c["grid"], grid2, grid2
    ref = spec.compile()
    for name, tol in (("skybox", 2), ("grid", 0)):
        i = ref.texture(name).id
        sl = slice(ref.tex_adr[i], ref.tex_adr[i] + ref.tex_width[i] * ref.tex_height[i] * 3)
        diff = np.abs(ref.tex_data[sl].astype(int) - other.physics.model.tex_data[sl])
        assert diff.max() <= tol, name
    rgba = other.physics.named.model.mat_rgba
    assert np.allclose(rgba["self", :3], c["self"]) and np.allclose(rgba["self_default", :3], c["self"])


@pytest.mark.parametrize("sigma", [0.1, 0.2])
def test_colour_draw_statistics(sigma):
    rng = np.random.default_rng(0)
    draws = [envs.draw_colors(rng, sigma) for _ in range(4000)]
    for key, default in envs.DEFAULT_COLORS.items():
        x = np.array([d[key] for d in draws])
        assert x.min() >= 0 and x.max() <= 1
        for ch, mu in enumerate(default):
            if 2 * sigma <= mu <= 1 - 2 * sigma:  # clipping barely matters: plain Gaussian moments
                assert abs(x[:, ch].mean() - mu) < 0.01
                assert abs(x[:, ch].std() - sigma) < 0.1 * sigma
            # the clipped mass at 0 is the Gaussian's tail
            expected = 0.5 * (1 + math.erf(-mu / (sigma * math.sqrt(2))))
            assert abs((x[:, ch] == 0).mean() - expected) < 0.02
    a = np.array([d["self"] for d in draws])
    assert abs(np.corrcoef(a[:, 0], a[:, 1])[0, 1]) < 0.05  # independent channels


# ----------------------------------------------------------------------------- backgrounds
def test_procedural_videos():
    easy, hard = VideoSource("video_easy", 84), VideoSource("video_hard", 84)
    assert len(easy) == 10 and len(hard) == 100
    clip = easy.clip(3)
    f0, f1 = clip[0], clip[1]
    assert f0.shape == (84, 84, 3) and f0.dtype == np.uint8
    assert np.array_equal(f0, VideoSource("video_easy", 84).clip(3)[0])  # deterministic
    assert np.abs(f1.astype(int) - f0).mean() > 0.5  # moving
    assert np.abs(clip[50].astype(int) - f0).mean() > 5
    assert f0.std() > 15 and not np.array_equal(f0, easy.clip(4)[0])  # content, varied
    g = f0.astype(float).mean(-1)
    assert np.corrcoef(g[:, :-1].ravel(), g[:, 1:].ravel())[0, 1] > 0.8  # smooth, not noise


def _write_mp4(path, value, n=6, size=32):
    import imageio.v2 as imageio

    with imageio.get_writer(path, fps=10, format="FFMPEG", macro_block_size=1) as w:
        for _ in range(n):
            w.append_data(np.full((size, size, 3), value, np.uint8))


def test_video_folder_numeric_order_and_frame_folders(tmp_path):
    for k, value in ((10, 200), (2, 120), (0, 40)):
        _write_mp4(str(tmp_path / f"video{k}.mp4"), value)
    frames = tmp_path / "video5_frames"
    frames.mkdir()
    for k, value in ((10, 90), (2, 60), (1, 30)):  # frame10 comes last
        Image.fromarray(np.full((20, 30, 3), value, np.uint8)).save(frames / f"frame{k}.png")
    src = VideoSource("video_easy", 24, str(tmp_path))
    assert [os.path.basename(p) for p in src.paths] == ["video0.mp4", "video2.mp4", "video5_frames", "video10.mp4"]
    clip = src.clip(1)
    assert clip.shape == (6, 24, 24, 3) and abs(clip.mean() - 120) < 3
    assert [int(f.mean()) for f in src.clip(2)] == [30, 60, 90]
    # DMC-GB's data root: the sub-folder named after the mode is used
    (tmp_path / "root" / "video_hard").mkdir(parents=True)
    _write_mp4(str(tmp_path / "root" / "video_hard" / "video0.mp4"), 77)
    assert len(VideoSource("video_hard", 24, str(tmp_path / "root"))) == 1
    # end to end: the env's sky shows the folder's first video of the episode
    env = envs.make_env(
        "cheetah-run", seed=0, mode="video_easy", image_size=24, video_dir=str(tmp_path / "root" / "video_hard")
    )
    env.reset()
    sky = regions(env)[0]
    assert np.abs(env.render()[sky].astype(int) - 77).max() <= 3


# ----------------------------------------------------------------------------- errors
def _one_line_config_error(fn, *needles):
    with pytest.raises(envs.ConfigError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg
    return msg


def test_bad_inputs_raise_config_errors(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("MuJoCo touched before validation")

    monkeypatch.setattr(envs, "DMCEnv", boom)
    _one_line_config_error(lambda: envs.make_env("cheetah-sprint", 0), "cheetah-sprint", "cheetah-run", "walker-walk")
    _one_line_config_error(lambda: envs.make_env("nope", 0), "nope", "valid ids")
    _one_line_config_error(lambda: envs.make_env("cheetah-run", 0, mode="video_medium"), "video_medium", "video_hard")
    _one_line_config_error(lambda: envs.make_env("cheetah-run", 0, action_repeat=0), "action_repeat")
    missing, empty = str(tmp_path / "missing"), tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a video")
    _one_line_config_error(lambda: envs.make_env("cheetah-run", 0, "video_easy", video_dir=missing), missing)
    _one_line_config_error(lambda: envs.make_env("cheetah-run", 0, "video_hard", video_dir=str(empty)), str(empty))
    _one_line_config_error(lambda: envs.OverlayImages(missing), missing)
    _one_line_config_error(lambda: envs.OverlayImages(str(empty)), str(empty))
    assert isinstance(envs.ConfigError("x"), ValueError)


def test_bad_camera_is_a_config_error():
    _one_line_config_error(lambda: envs.make_env("cheetah-run", 0, camera_id=9), "camera_id")


def test_gl_failure_message(monkeypatch):
    def no_gl(*a, **k):
        raise RuntimeError("Cannot initialize a EGL device display.\nSecond line.")

    monkeypatch.setattr(envs, "_make_camera", no_gl)
    _one_line_config_error(
        lambda: envs.make_env("cheetah-run", 0), "MUJOCO_GL=osmesa", "libosmesa6", "libegl1 libgl1-mesa-dri", "EGL device"
    )


# ----------------------------------------------------------------------------- overlay images
def test_overlay_images_procedural():
    a, b = envs.OverlayImages(seed=0), envs.OverlayImages(seed=0)
    x = a.sample(128)
    assert x.shape == (128, 3, 84, 84) and x.dtype == np.uint8 and x.flags.c_contiguous
    assert np.array_equal(x, b.sample(128))  # deterministic
    assert not np.array_equal(x[:8], envs.OverlayImages(seed=1).sample(8))
    assert len(a) == 500 and len(np.unique(x.reshape(128, -1), axis=0)) == 128  # a varied bank
    assert x.std() > 30
    seq = np.random.SeedSequence(7)  # a spawned SeedSequence works as the seed, and is left unchanged
    c = envs.OverlayImages(seed=seq).sample(8)
    assert np.array_equal(c, envs.OverlayImages(seed=np.random.SeedSequence(7)).sample(8))
    assert seq.n_children_spawned == 0
    for _ in range(4):  # read the rest of the bank (500 procedural images), then time the steady state
        a.sample(128)
    t = time.perf_counter()
    for _ in range(5):
        a.sample(128)
    assert (time.perf_counter() - t) / 5 < 0.25  # ~30 ms idle; loose bound for loaded machines
    assert envs.OverlayImages(image_size=32).sample(2).shape == (2, 3, 32, 32)


def full_canvas_dead_leaves(rng, size, leaves=120):
    """dead_leaves_image as it was before it painted each leaf in its bounding box (commit e06528d): every leaf tested
    at every pixel, the last one covering a pixel shown. The reference the faster one must equal."""
    r_min, r_max = 0.03, 0.5
    u = rng.uniform(0, 1, leaves)
    radius = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5
    centre = rng.uniform(-0.1, 1.1, (leaves, 2))
    kind = rng.integers(0, 3, leaves)
    aspect = np.where(kind == 2, rng.uniform(0.3, 1.0, leaves), 1.0)
    angle = rng.uniform(0, np.pi, leaves)
    colour = rng.uniform(0, 1, (leaves, 3))
    gradient = rng.normal(0, 0.6, (leaves, 2))
    x = (np.arange(size) + 0.5) / size
    dx, dy = x[None, None, :] - centre[:, 0, None, None], x[None, :, None] - centre[:, 1, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    along, across = dx * cos + dy * sin, (dy * cos - dx * sin) / aspect[:, None, None]
    r = radius[:, None, None]
    inside = np.where((kind == 1)[:, None, None], np.maximum(np.abs(along), np.abs(across)) <= r, along**2 + across**2 <= r**2)
    inside[0] = True
    top = leaves - 1 - np.argmax(inside[::-1], axis=0)
    yy, xx = np.meshgrid(x, x, indexing="ij")
    shade = 1 + gradient[top, 0] * (xx - centre[top, 0]) + gradient[top, 1] * (yy - centre[top, 1])
    return (np.clip(colour[top] * shade[..., None], 0, 1) * 255).astype(np.uint8)


def test_dead_leaves_images_are_the_full_canvas_ones():
    """Painted leaf by leaf inside each leaf's bounding box, the images are those of the full-canvas version, bit for
    bit (its speed: benchmarks/overlay_speed.py, the first pass through the pool)."""
    from envs.backgrounds import dead_leaves_image

    for seed, size, leaves in [
        *((seed, size, 120) for seed in range(4) for size in (7, 40, 84, 126)),
        (4, 64, 1),
        (5, 64, 600),
    ]:
        image = dead_leaves_image(np.random.default_rng(seed), size, leaves)
        assert image.shape == (size, size, 3) and image.dtype == np.uint8
        assert np.array_equal(image, full_canvas_dead_leaves(np.random.default_rng(seed), size, leaves)), (seed, size, leaves)


def test_fill_reads_the_whole_pool_before_the_draws(tmp_path):
    """After fill() no draw reads (procedural bank or a folder that fits); the pool holds the first pass's images;
    a streamed folder reads its first len(pool) files and streams on as before."""
    from envs.backgrounds import dead_leaves_image

    bank = envs.OverlayImages(image_size=16, seed=2)
    bank.fill()
    assert bank._reads == 500 and sorted(bank.source) == list(range(500))
    slot = int(np.flatnonzero(bank.source == 7)[0])  # image 7 of the bank, as _read makes it
    assert np.array_equal(bank.pool[slot], dead_leaves_image(np.random.default_rng([2, 7, *bank._procedural_key]), 24))
    pool = bank.pool.copy()
    for _ in range(3):
        assert bank.sample(200).shape == (200, 3, 16, 16)
    assert bank._reads == 500 and np.array_equal(bank.pool, pool)  # nothing read or changed by the draws
    bank.fill()
    assert bank._reads == 500  # filled once

    for i in range(12):
        Image.fromarray(np.full((10, 10, 3), 20 * i, np.uint8)).save(tmp_path / f"img{i}.png")
    streamed = envs.OverlayImages(str(tmp_path), image_size=4, seed=0, max_images=8, draws_per_image=2)
    streamed.fill()
    assert streamed._reads == 8 and sorted(streamed.source) == list(range(8))
    drawn = []
    for _ in range(8):
        streamed.sample(4)
        drawn.extend(streamed.last_drawn)
    assert set(drawn) == set(range(12)) and streamed._reads > 8  # the rest of the folder streams in


def test_crop_boxes_follow_torchvision():
    """Area fraction in [0.08, 1], aspect ratio in [3/4, 4/3] (log-uniform before the fit test), placed inside the
    image; when no try fits, torchvision's centre crop narrowed to the nearest allowed ratio."""
    from envs.backgrounds import random_resized_crop_boxes

    rng = np.random.default_rng(0)
    n = 20000
    top, left, h, w = random_resized_crop_boxes(rng, np.full(n, 224), np.full(n, 224))
    area, ratio = h * w / 224**2, w / h
    assert area.min() >= 0.08 - 0.01 and area.max() <= 1 and area.max() > 0.95 and area.min() < 0.09
    assert ratio.min() >= 3 / 4 - 0.02 and ratio.max() <= 4 / 3 + 0.02
    assert abs(np.log(ratio).mean()) < 0.01  # log-uniform: symmetric
    assert np.all((top >= 0) & (left >= 0) & (top + h <= 224) & (left + w <= 224))
    assert abs((top / (224 - h + 1)).mean() - 0.5) < 0.02  # placed uniformly
    # Small areas are accepted on every try, large ones often rejected: the area's density falls above ~0.75.
    assert (area < 0.5).mean() > 0.5
    # No try can fit a 10x200 strip (a 0.08 area needs height >= 11): centre crop of height 10 at ratio 4/3.
    boxes = random_resized_crop_boxes(rng, [10, 200], [200, 10])
    assert [v.tolist() for v in boxes] == [[0, 93], [93, 0], [10, 13], [13, 10]]


def test_overlay_crops_and_flips_end_to_end(tmp_path):
    """An image that encodes its own coordinates (R = column, G = row) shows which box each draw cropped."""
    side = 200
    ramp = np.round(np.arange(side) * 255 / (side - 1)).astype(np.uint8)
    coords = np.stack([np.tile(ramp, (side, 1)), np.tile(ramp[:, None], (1, side)), np.full((side, side), 128, np.uint8)], -1)
    Image.fromarray(coords).save(tmp_path / "coords.png")
    x = envs.OverlayImages(str(tmp_path), image_size=32, seed=0).sample(600).astype(float) * (side - 1) / 255
    red, green = x[:, 0], x[:, 1]
    flipped = red[:, :, 0].mean(1) > red[:, :, -1].mean(1)
    assert abs(flipped.mean() - 0.5) < 0.08  # flips about half
    assert np.all(np.abs(np.diff(red, axis=2)).max(axis=(1, 2)) < 3 * side / 32)  # smooth: a crop, not a shuffle
    width = np.abs(red[:, :, -1] - red[:, :, 0]).mean(1) * 32 / 31  # crop extents in source pixels
    height = (green[:, -1, :] - green[:, 0, :]).mean(1) * 32 / 31
    area, ratio = width * height / side**2, width / height
    assert area.min() > 0.06 and area.max() < 1.05 and area.min() < 0.15 and area.max() > 0.8
    assert ratio.min() > 0.7 and ratio.max() < 1.4 and np.all(height > 0)


def test_overlay_pool_bounds_memory_and_spaces_repeats(tmp_path):
    for i in range(40):
        Image.fromarray(np.full((12, 20, 3), 6 * i, np.uint8)).save(tmp_path / f"img{i}.png")
    streamed = envs.OverlayImages(str(tmp_path), image_size=8, seed=0, max_images=16, draws_per_image=2)
    assert len(streamed) == 40 and streamed.pool.shape == (16, 12, 12, 3)  # the bound: 16 x (1.5 x 8)^2 x 3 bytes
    drawn = []
    for _ in range(40):
        streamed.sample(8)
        drawn.extend(streamed.last_drawn)
    drawn = np.array(drawn)
    assert all(len(set(drawn[i : i + 16])) == 16 for i in range(len(drawn) - 16))  # no repeat within 16 draws
    assert set(drawn) == set(range(40))  # the whole folder streams through
    # reads: one per slot in the first pass, then one per 2 draws
    assert abs(streamed._reads - (16 + (320 - 16) / 2)) <= 8
    assert np.bincount(drawn % 40).max() <= 2 * np.ceil(streamed._reads / 40)
    cached = envs.OverlayImages(str(tmp_path), image_size=8, seed=0, max_images=64)
    for _ in range(20):
        cached.sample(8)
        assert sorted(cached.source[cached.source >= 0]) == list(range(min(40, 8 * (_ + 1))))
    assert cached._reads == 40 and len(cached.pool) == 40  # a folder that fits is read once
    for _ in range(3):
        cached.sample(40)
        assert sorted(cached.last_drawn) == list(range(40))  # every image once per pass


def test_overlay_images_from_folder(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    values = [10, 100, 200]
    for i, v in enumerate(values):
        folder = tmp_path / "a" / "b" if i else tmp_path
        Image.fromarray(np.full((50, 70, 3), v, np.uint8)).save(folder / f"img{i}.{'png' if i % 2 else 'jpg'}")
    (tmp_path / "readme.txt").write_text("ignored")
    imgs = envs.OverlayImages(str(tmp_path), image_size=16, seed=3)
    assert len(imgs) == 3
    x = imgs.sample(64)
    assert x.shape == (64, 3, 16, 16) and x.dtype == np.uint8
    means = x.mean(axis=(1, 2, 3))
    assert all(min(abs(m - v) for v in values) <= 1.5 for m in means)  # flat images stay flat under crops
    assert len(np.unique(means.round(-1))) == 3
    assert np.array_equal(x, envs.OverlayImages(str(tmp_path), image_size=16, seed=3).sample(64))
    assert len(envs.OverlayImages(str(tmp_path), image_size=16, max_images=2).pool) == 2
