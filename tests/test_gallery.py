"""Tests of envs/gallery.py, the picture of the distraction modes: its panels against envs made here, the
physical state behind them, the PNG the CLI writes, and its one-line errors.

Making an env costs ~0.5 s (model load, GL context), so the tests share one small case: cartpole-swingup
at 32 px after 3 steps, every mode made once by the gallery and once here.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from common import ROOT
from PIL import Image

import envs
from envs import gallery

ENV_ID, SEED, STEPS, SIZE = "cartpole-swingup", 1, 3, 32


def run_gallery(*flags):
    return subprocess.run([sys.executable, "-m", "envs.gallery", *flags], cwd=ROOT, capture_output=True, text=True)


@pytest.fixture(scope="module")
def frames():
    return gallery.mode_frames(ENV_ID, SEED, STEPS, image_size=SIZE)


@pytest.fixture(scope="module")
def own_envs():
    """{mode: (env, newest frame)}: each mode's env made, reset and stepped here, apart from the gallery's code."""
    made = {}
    for mode in envs.ALL_MODES:
        env = envs.make_env(ENV_ID, SEED, mode, image_size=SIZE)
        obs = env.reset(seed=SEED)[0]
        rng = np.random.default_rng(SEED)
        for _ in range(STEPS):
            obs = env.step(rng.uniform(-1, 1, env.action_space.shape))[0]
        made[mode] = env, obs[-3:].transpose(1, 2, 0)
    return made


def test_each_panel_is_that_modes_own_observation(frames, own_envs):
    assert list(frames) == list(envs.ALL_MODES)
    for mode, frame in frames.items():
        assert frame.shape == (SIZE, SIZE, 3) and frame.dtype == np.uint8
        assert np.array_equal(frame, own_envs[mode][1]), mode


def test_one_physical_state_seen_differently(frames, own_envs):
    train_env = own_envs["train"][0]
    for mode, (env, _) in own_envs.items():
        assert np.array_equal(env.physics.get_state(), train_env.physics.get_state()), mode
    for mode in envs.ALL_MODES[1:]:  # every distraction changes much of the picture
        assert np.any(frames[mode] != frames["train"], axis=-1).mean() > 0.3, mode
    # video_easy only replaces the sky: wherever the train render shows a geom (cart, pole, floor), the pixels
    # are train's exactly, so the agent stands where it stands in train.
    segmentation = train_env.physics.render(SIZE, SIZE, camera_id=0, segmentation=True)
    geom = segmentation[..., 0] != -1
    assert 0.1 < geom.mean() < 0.9
    assert np.array_equal(frames["video_easy"][geom], frames["train"][geom])
    assert np.any(frames["video_easy"][~geom] != frames["train"][~geom], axis=-1).mean() > 0.9


def test_a_different_physical_state_is_refused(monkeypatch):
    make_env = envs.make_env
    shifted = lambda env_id, seed, mode, **flags: make_env(env_id, seed + (mode == "color_easy"), mode, **flags)
    monkeypatch.setattr(envs, "make_env", shifted)
    with pytest.raises(RuntimeError, match="color_easy env's physics state differs from the train env's"):
        gallery.mode_frames(ENV_ID, SEED, STEPS, modes=("train", "color_easy"), image_size=SIZE)


def test_cli_writes_the_labelled_grid_of_enlarged_panels(tmp_path, frames):
    out, modes, scale = tmp_path / "modes.png", ["train", "video_hard", "distracting_cs_hard"], 2
    flags = ["--modes", *modes, "--image-size", SIZE, "--steps", STEPS, "--seed", SEED, "--scale", scale, "--out", out]
    result = run_gallery("--env-ids", ENV_ID, *map(str, flags))
    assert result.returncode == 0, result.stderr
    image = np.asarray(Image.open(out).convert("RGB"))
    panel, step = SIZE * scale, SIZE * scale + gallery.GAP
    band = image.shape[1] - len(modes) * step  # the labels' strip, left and top
    assert image.shape == (band + 2 * step, band + len(modes) * step, 3) and 10 <= band < panel
    overlays = envs.OverlayImages(None, SIZE, SEED).sample(len(modes))  # the last row: the default overlay images
    for col, mode in enumerate(modes):
        shown = image[band : band + panel, band + col * step : band + col * step + panel]
        assert np.array_equal(shown, frames[mode].repeat(scale, axis=0).repeat(scale, axis=1)), mode
        assert image[:band, band + col * step : band + col * step + panel].min() < 100, mode  # its title
        overlay = image[band + step : band + step + panel, band + col * step : band + col * step + panel]
        assert np.array_equal(overlay, overlays[col].transpose(1, 2, 0).repeat(scale, axis=0).repeat(scale, axis=1))
    assert image[band : band + panel, :band].min() < 100  # the env id
    assert image[band + step : band + step + panel, :band].min() < 100  # "overlay images"
    assert "3 modes, and a row of overlay images" in result.stdout


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--env-ids", "walker-wlk"], "error: unknown env id 'walker-wlk' (did you mean walker-walk"),
        (["--modes", "train", "video_hardd"], "error: unknown mode 'video_hardd'"),
        (["--video-hard-dir", "no_such_folder"], "error: --video-hard-dir no_such_folder: no such folder"),
        (["--overlay-dir", "no_such_folder"], "error: --overlay-dir no_such_folder: no such folder"),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path, flags, message):
    result = run_gallery(*flags, "--out", str(tmp_path / "modes.png"))
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(message), result.stderr
    assert result.stdout == "" and not os.listdir(tmp_path)
