"""Tests of envs/distracting.py: the Distracting Control Suite modes (camera, colours, background video).

Envs render at 32 px (a frame costs about the same at any size; the shadow pass dominates) and take a few steps.
"""

import numpy as np
import pytest
from PIL import Image

import envs
from envs import distracting

LEVELS = list(distracting.LEVELS)


def sky_bytes(env):
    return env.physics.model.tex_data[env.distraction._sky_data].copy()


def camera_direction(env):
    """Unit viewing direction (the camera's -z axis) of the env's camera, as MuJoCo renders it."""
    return -env.physics.data.cam_xmat[env.camera_id].reshape(3, 3)[:, 2]


def default_target(twin):
    """Where the default camera of `twin` (a train env in the same physics state) looks, as far as the agent."""
    data = twin.physics.named.data
    distance = np.linalg.norm(data.cam_xpos[0] - data.subtree_com[1])
    return data.cam_xpos[0] + data.cam_xmat[0].reshape(3, 3) @ [0, 0, -distance]


@pytest.fixture(scope="module")
def twins():
    """A train env and one env per level, cheetah-run (a tracking camera), same seed: same physics."""
    return {mode: envs.make_env("cheetah-run", seed=3, mode=mode, image_size=32) for mode in ["train"] + LEVELS}


# ----------------------------------------------------------------------------- what changes, and how far
@pytest.mark.parametrize("mode", LEVELS)
def test_each_level_moves_camera_colours_and_background_every_step(twins, mode):
    env, train = twins[mode], twins["train"]
    rng = np.random.default_rng(0)
    env.reset(seed=5), train.reset(seed=5)
    seen = []
    for _ in range(3):
        action = rng.uniform(-1, 1, 6)
        env.step(action), train.step(action)
        assert np.array_equal(env.physics.data.qpos, train.physics.data.qpos)  # distractions leave physics alone
        relative = env.physics.data.cam_xpos[0] - env.physics.named.data.subtree_com[1]  # the camera tracks the agent
        seen.append(
            (
                relative,
                env.physics.data.cam_xmat[0].copy(),
                env.physics.model.mat_rgba[:, :3].copy(),
                sky_bytes(env),
                env.render().copy(),
            )
        )
        # The moved camera still looks at the agent: its axis passes through the default camera's target.
        to_target = default_target(train) - env.physics.data.cam_xpos[0]
        assert np.linalg.norm(np.cross(camera_direction(env), to_target)) < 1e-6 * np.linalg.norm(to_target)
        assert np.dot(camera_direction(env), to_target) > 0
    for (pos0, mat0, rgb0, sky0, frame0), (pos1, mat1, rgb1, sky1, frame1) in zip(seen, seen[1:]):
        assert np.linalg.norm(pos1 - pos0) > 1e-4 and np.abs(mat1 - mat0).max() > 1e-4  # the camera moves
        assert np.abs(rgb1 - rgb0).max() > 1e-4  # colours drift
        assert not np.array_equal(sky1, sky0)  # the video plays
        assert np.abs(frame1.astype(int) - frame0).mean() > 1
    # Away from the default: the camera pose, every material colour (within +-intensity) and the ground's alpha.
    x = distracting.LEVELS[mode]
    assert np.linalg.norm(env.physics.data.cam_xpos[0] - train.physics.data.cam_xpos[0]) > 1e-3
    rgb, default = env.physics.model.mat_rgba[:, :3], train.physics.model.mat_rgba[:, :3]
    assert np.all(np.abs(rgb - default) <= x + 1e-9) and np.abs(rgb - default).max() > x / 4
    assert env.physics.named.model.mat_rgba["grid", 3] == 1.0  # cheetah keeps its floor opaque


def test_higher_intensity_moves_camera_and_colours_further():
    """Over the same episodes, the camera's angle to the default view, its distance change and the colour
    change grow with the intensity."""
    train = envs.make_env("cartpole-swingup", seed=0, image_size=32)  # a fixed camera
    made = {
        x: envs.make_env("cartpole-swingup", seed=0, mode="distracting_cs", intensity=x, image_size=32) for x in (0.1, 0.4)
    }
    stats = {x: [] for x in made}
    for episode in range(4):
        for x, env in [(None, train), *made.items()]:
            env.reset(seed=episode)
            for _ in range(2):
                env.step(np.zeros(1))
            if x is not None:
                angle = np.arccos(np.clip(camera_direction(env) @ camera_direction(train), -1, 1))
                zoom = abs(
                    np.log(
                        np.linalg.norm(env.physics.data.cam_xpos[0] - default_target(train))
                        / np.linalg.norm(train.physics.data.cam_xpos[0] - default_target(train))
                    )
                )
                colour = np.abs(env.physics.model.mat_rgba[:, :3] - train.physics.model.mat_rgba[:, :3]).mean()
                stats[x].append((angle, zoom, colour))
    weak, strong = np.mean(stats[0.1], axis=0), np.mean(stats[0.4], axis=0)
    assert np.all(strong > 2 * weak), (weak, strong)
    assert weak[0] > 0.01 and weak[2] > 0.01  # both move at all


def test_random_walks_stay_in_the_original_ranges():
    """The camera and colour walks (no rendering needed) keep to the original's bounds and step sizes."""
    env = envs.make_env("walker-walk", seed=0, mode="distracting_cs_hard", image_size=32)
    env.reset()
    d, rng, x = env.distraction, np.random.default_rng(1), 0.3
    spheres, rolls, speeds, steps, frames = [], [], [], [], []
    for _ in range(3000):
        before = d.rgb.copy()
        d.advance(rng, 1)
        spheres.append(d.sphere), rolls.append(d.roll), speeds.append(np.linalg.norm(d.vel))
        inside = np.minimum(d.rgb, before) > d.rgb_low + 0.05
        inside &= np.maximum(d.rgb, before) < d.rgb_high - 0.05
        steps.append((d.rgb - before)[inside]), frames.append(d.frame_index)
    spheres = np.array(spheres)
    assert np.all(spheres >= d.sphere_low - 1e-9) and np.all(spheres <= d.sphere_high + 1e-9)
    assert d.sphere_high[2] <= np.pi / 2 + 1e-9  # never below the horizon
    assert np.ptp(spheres[:, 1]) > 0.5 * (d.sphere_high[1] - d.sphere_low[1])  # it explores the range
    assert np.max(np.abs(rolls)) <= np.pi / 2 * x + 1e-9 and np.ptp(rolls) > 0.2
    assert max(speeds) <= 0.4 * x * d.vel_scale + 1e-9
    assert abs(np.concatenate(steps).std() - 0.03 * x) < 0.1 * 0.03 * x
    assert np.all((d.rgb >= d.rgb_low) & (d.rgb <= d.rgb_high))
    frames = np.array(frames)
    assert frames.min() == 0 and frames.max() == len(d.clip) - 1  # bounces between the ends
    assert set(np.abs(np.diff(frames))) <= {0, 1}


@pytest.mark.parametrize(
    "env_id, action_repeat, advances",
    [("cheetah-run", None, [2, 2, 2]), ("finger-spin", None, [1, 1, 1]), ("cartpole-swingup", 3, [1, 2, 1])],
)
def test_distractions_advance_on_every_second_control_step(env_id, action_repeat, advances):
    env = envs.make_env(env_id, seed=0, mode="distracting_cs_easy", image_size=16, action_repeat=action_repeat)
    calls, advance = [], env.distraction.advance
    env.distraction.advance = lambda rng, n: (calls.append(n), advance(rng, n))
    env.reset()
    for _ in advances:
        env.step(env.action_space.sample())
    assert calls == advances


def test_ground_alpha_per_domain():
    for env_id, alpha in (("reacher-easy", 0.0), ("ball_in_cup-catch", 0.3), ("walker-walk", 1.0)):
        env = envs.make_env(env_id, seed=0, mode="distracting_cs_easy", image_size=16)
        assert env.physics.named.model.mat_rgba["grid", 3] == alpha
        assert distracting.ground_alpha(env_id.split("-")[0]) == alpha


# ----------------------------------------------------------------------------- determinism, videos
def test_same_seed_same_frames():
    a, b, c = (envs.make_env("finger-spin", seed=s, mode="distracting_cs_medium", image_size=32) for s in (4, 4, 5))
    runs = {}
    for name, env in (("a", a), ("b", b), ("c", c)):
        rng = np.random.default_rng(0)
        obs = [env.reset()[0]] + [env.step(rng.uniform(-1, 1, 2))[0] for _ in range(3)]
        runs[name] = obs
    assert all(np.array_equal(x, y) for x, y in zip(runs["a"], runs["b"]))
    assert not np.array_equal(runs["a"][0], runs["c"][0])
    obs = a.reset(seed=5)[0]  # reseeding at reset gives the fresh env of that seed
    assert np.array_equal(obs, runs["c"][0])


def test_video_counts_per_level():
    assert [len(distracting.Backgrounds(distracting.LEVELS[m], 32)) for m in LEVELS] == [4, 8, 60]
    counts = [distracting.num_videos(x) for x in (0.025, 0.05, 0.07, 0.1, 0.15, 0.2, 0.25, 1.0)]
    assert counts == [2, 2, 4, 4, 6, 8, None, None]
    clip = distracting.Backgrounds(0.1, 32).clip(2)
    assert clip.shape == (distracting.PROCEDURAL_LENGTH, 32, 32, 3) and clip.dtype == np.uint8
    assert np.array_equal(clip, distracting.procedural_clip(2, 32))
    assert not np.array_equal(clip, distracting.procedural_clip(3, 32))
    assert np.abs(clip[1].astype(int) - clip[0]).mean() > 0.5  # a moving video


def _write_davis(root, sequences, train=None, frames=3):
    """A tiny DAVIS 2017 tree: JPEGImages/480p/<sequence>/0000k.jpg, one flat colour per sequence."""
    for i, name in enumerate(sequences):
        folder = root / "JPEGImages" / "480p" / name
        folder.mkdir(parents=True)
        for t in range(frames):
            Image.fromarray(np.full((24, 40, 3), 20 * i + 5 * t, np.uint8)).save(folder / f"{t:05d}.jpg")
    if train is not None:
        (root / "ImageSets" / "2017").mkdir(parents=True)
        (root / "ImageSets" / "2017" / "train.txt").write_text("\n".join(train) + "\n")


def test_davis_folder_layout(tmp_path):
    names = ["bear", "boat", "bus", "camel", "dog", "elephant"]
    _write_davis(tmp_path, names, train=["elephant", "boat", "bear", "bus", "dog"])  # camel: a val sequence
    src = distracting.Backgrounds(0.1, 16, str(tmp_path))
    assert [p.split("/")[-1] for p in src.paths] == ["bear", "boat", "bus", "dog"]  # sorted train list, first 4
    clip = src.clip(1)
    assert clip.shape == (3, 16, 16, 3) and [round(f.mean()) for f in clip] == [20, 25, 30]  # boat, resized once
    assert len(distracting.Backgrounds(0.3, 16, str(tmp_path))) == 5  # hard: every train sequence
    (tmp_path / "ImageSets" / "2017" / "train.txt").unlink()
    assert len(distracting.Backgrounds(0.3, 16, str(tmp_path))) == 6  # no list: every sequence folder
    # End to end: the env's sky texture holds the current frame of its episode's sequence.
    env = envs.make_env("reacher-easy", seed=0, mode="distracting_cs_easy", image_size=8, davis_dir=str(tmp_path))
    env.reset()
    d = env.distraction
    assert d.clip.shape == (3, 16, 16, 3) and 0 <= d.video_index < 4
    assert np.array_equal(sky_bytes(env), d.clip[d.frame_index].ravel())


# ----------------------------------------------------------------------------- errors
def _one_line_error(fn, *needles):
    with pytest.raises(envs.ConfigError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg


def test_bad_input_is_one_line_before_mujoco_starts(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("MuJoCo touched before validation")

    monkeypatch.setattr(envs, "DMCEnv", boom)
    _one_line_error(lambda: envs.make_env("quadruped-walk", 0, "distracting_cs_easy"), "quadruped", "reacher", "walker")
    _one_line_error(lambda: envs.make_env("cheetah-run", 0, "distracting_cs"), "intensity", "None")
    _one_line_error(lambda: envs.make_env("cheetah-run", 0, "distracting_cs", intensity=0), "intensity", "(0, 1]")
    _one_line_error(lambda: envs.make_env("cheetah-run", 0, "distracting_cs", intensity=1.5), "1.5")
    _one_line_error(lambda: envs.make_env("cheetah-run", 0, "distracting_cs_hard", intensity=0.5), "0.3", "distracting_cs")
    _one_line_error(lambda: envs.make_env("cheetah-run", 0, "video_easy", intensity=0.5), "intensity", "video_easy")
    _one_line_error(
        lambda: envs.make_env(
            "cheetah-run",
            0,
            "distracting_cs_medium_",
        ),
        "distracting_cs_hard",
    )
    missing = str(tmp_path / "missing")
    _one_line_error(
        lambda: envs.make_env("cheetah-run", 0, "distracting_cs_easy", davis_dir=missing), missing, "JPEGImages/480p"
    )
    _write_davis(tmp_path / "few", ["bear", "boat", "bus"], train=["bear", "boat", "bus"])
    _one_line_error(
        lambda: envs.make_env("walker-walk", 0, "distracting_cs_easy", davis_dir=str(tmp_path / "few")),
        "3 train sequences",
        "4",
    )
    _write_davis(tmp_path / "listed", ["bear"], train=["bear", "boat"])
    _one_line_error(
        lambda: envs.make_env("walker-walk", 0, "distracting_cs_hard", davis_dir=str(tmp_path / "listed")), "boat", "missing"
    )
    (tmp_path / "empty" / "JPEGImages" / "480p").mkdir(parents=True)
    _one_line_error(
        lambda: envs.make_env("walker-walk", 0, "distracting_cs_hard", davis_dir=str(tmp_path / "empty")), "no sequences"
    )


def test_unsupported_camera_is_one_line():
    _one_line_error(
        lambda: envs.make_env("cartpole-swingup", 0, "distracting_cs_easy", camera_id=1, image_size=16),
        "camera_id 1",
        "cartpole",
    )
