"""A picture of the distraction modes: one physical state of each task, seen through every mode.

    python -m envs.gallery --env-ids walker-walk cartpole-swingup cheetah-run --out docs/modes.png

One row per task (env id on the left), one column per mode (`envs.ALL_MODES` or `--modes`, names on
top). A panel is the newest frame of that mode's observation (the last 3 channels of its
(3 * frame_stack, H, W) stack) at the agent's resolution (`--image-size`, default 84), enlarged
`--scale` times by repeating pixels (nearest neighbour): every pixel is one the agent sees, nothing
smoothed or added.

Same physical state: every mode's env is made with `envs.make_env(env_id, seed, mode)`, reset and
stepped `--steps` times with one seeded action sequence (the steps also move the videos and the
distracting_cs camera past their first frame). The task's initial state comes from the task's own
generator, seeded alike in every mode and apart from the colour and distracting_cs draws, so the
physics states agree exactly; `mode_frames` checks that (`physics.get_state()`) and fails otherwise,
so each panel stays the env's own observation, not a re-render.

Backgrounds are procedural unless `--video-easy-dir`, `--video-hard-dir` (DMC-GB's video folders) or
`--davis-dir` (DAVIS 2017, for the distracting_cs modes) are given, as for sgqn.py.

The last row, "overlay images", is what SGQN's attribution predictor and SVEA's critic train on (one
panel per column, as `envs.OverlayImages(--overlay-dir, --image-size, --seed).sample` draws them): by
default dead-leaves images, a generator that no mode's backgrounds come from. Bad arguments
stop with one line, `error: ...`, exit status 1 (as the training scripts), before any env is made.
"""

import argparse
import os
import sys

import numpy as np
from matplotlib import font_manager
from PIL import Image, ImageDraw, ImageFont

import envs

GAP = 4  # white pixels after each panel


def check_gallery_args(args):
    """ConfigError (one line) for anything the figure cannot be made with, before MuJoCo starts."""
    for flag, names in (("--env-ids", args.env_ids), ("--modes", args.modes)):
        if len(set(names)) < len(names):
            raise envs.ConfigError(f"{flag} {' '.join(names)}: a name is listed twice")
    if args.steps < 0:
        raise envs.ConfigError(f"--steps {args.steps}: must be 0 or more")
    if args.scale < 1:
        raise envs.ConfigError(f"--scale {args.scale}: must be 1 or more")
    if not args.out.lower().endswith(".png"):
        raise envs.ConfigError(f"--out {args.out}: give a .png file (lossless: the pixels stay as the agent sees them)")
    if not os.path.isdir(os.path.dirname(args.out) or "."):
        raise envs.ConfigError(f"--out {args.out}: no such folder {os.path.dirname(args.out)!r}")
    for flag, folder in (
        ("--video-easy-dir", args.video_easy_dir),
        ("--video-hard-dir", args.video_hard_dir),
        ("--davis-dir", args.davis_dir),
        ("--overlay-dir", args.overlay_dir),
    ):
        if folder is not None and not os.path.isdir(folder):
            raise envs.ConfigError(f"{flag} {folder}: no such folder")
    for env_id in args.env_ids:
        for mode in args.modes:
            envs.check_args(
                env_id, mode, **mode_flags(mode, args.image_size, args.video_easy_dir, args.video_hard_dir, args.davis_dir)
            )


def mode_flags(mode, image_size, video_easy_dir=None, video_hard_dir=None, davis_dir=None) -> dict:
    """Keyword arguments of envs.make_env / envs.check_args for an env of `mode`."""
    video_dir = {"video_easy": video_easy_dir, "video_hard": video_hard_dir}.get(mode)
    return dict(image_size=image_size, video_dir=video_dir, davis_dir=davis_dir)


def mode_frames(
    env_id, seed=1, steps=10, modes=envs.ALL_MODES, image_size=84, video_easy_dir=None, video_hard_dir=None, davis_dir=None
) -> dict[str, np.ndarray]:
    """{mode: newest frame of the observation, (H, W, 3) uint8} after a reset and `steps` steps with the
    actions drawn from `seed`, in envs made with `seed`: the same physical state in every mode (checked)."""
    frames, first_state = {}, None
    for mode in modes:
        env = envs.make_env(env_id, seed, mode, **mode_flags(mode, image_size, video_easy_dir, video_hard_dir, davis_dir))
        obs, _ = env.reset()
        for action in np.random.default_rng(seed).uniform(-1, 1, (steps, *env.action_space.shape)):
            obs = env.step(action)[0]
        frames[mode] = obs[-3:].transpose(1, 2, 0)
        state = env.physics.get_state()
        env.close()
        if first_state is None:
            first_state = state
        elif not np.array_equal(state, first_state):
            raise RuntimeError(
                f"{env_id}: the {mode} env's physics state differs from the {modes[0]} env's after the same reset and steps"
            )
    return frames


def fitted_font(texts, width, largest) -> ImageFont.FreeTypeFont:
    """DejaVu Sans (matplotlib's) at the largest size up to `largest` px at which every text fits `width` px
    (6 px if none does)."""
    path = font_manager.findfont("DejaVu Sans")
    for size in range(largest, 5, -1):
        font = ImageFont.truetype(path, size)
        if all(font.getlength(text) <= width for text in texts):
            return font
    return font


OVERLAY_ROW = "overlay images"


def overlay_row(modes, image_size, seed, overlay_dir=None) -> dict[str, np.ndarray]:
    """{mode: HWC image}: one overlay image per column, the first len(modes) that training would draw."""
    images = envs.OverlayImages(overlay_dir, image_size, seed).sample(len(modes))
    return {mode: image.transpose(1, 2, 0) for mode, image in zip(modes, images)}


def gallery_image(frames_by_env: dict[str, dict[str, np.ndarray]], scale: int) -> Image.Image:
    """Panels (frames enlarged `scale` times by pixel repetition) in a grid: rows = env ids, columns = modes,
    mode names above the columns and env ids (turned 90 degrees) left of the rows, in a band of equal width."""
    env_ids, modes = list(frames_by_env), list(next(iter(frames_by_env.values())))
    panel = next(iter(frames_by_env[env_ids[0]].values())).shape[0] * scale
    band = max(14, panel // 8)
    font = fitted_font(env_ids + modes, panel - 4, int(band * 0.65))
    image = Image.new("RGB", (band + len(modes) * (panel + GAP), band + len(env_ids) * (panel + GAP)), "white")
    draw = ImageDraw.Draw(image)
    for col, mode in enumerate(modes):
        draw.text((band + col * (panel + GAP) + panel / 2, band / 2), mode, fill="black", font=font, anchor="mm")
    for row, env_id in enumerate(env_ids):
        label = Image.new("RGB", (panel, band), "white")
        ImageDraw.Draw(label).text((panel / 2, band / 2), env_id, fill="black", font=font, anchor="mm")
        top = band + row * (panel + GAP)
        image.paste(label.rotate(90, expand=True), (0, top))
        for col, mode in enumerate(modes):
            enlarged = frames_by_env[env_id][mode].repeat(scale, axis=0).repeat(scale, axis=1)
            image.paste(Image.fromarray(enlarged), (band + col * (panel + GAP), top))
    return image


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--env-ids", nargs="+", default=["walker-walk", "cartpole-swingup", "cheetah-run"], help="one row each"
    )
    parser.add_argument("--modes", nargs="+", default=list(envs.ALL_MODES), help="one column each")
    parser.add_argument("--out", default="docs/modes.png", help="PNG file to write")
    parser.add_argument("--seed", type=int, default=1, help="seeds the envs and the action sequence")
    parser.add_argument("--steps", type=int, default=10, help="agent steps before the snapshot")
    parser.add_argument("--image-size", type=int, default=84, help="observation size, in pixels")
    parser.add_argument("--scale", type=int, default=3, help="each observation pixel becomes scale x scale pixels")
    parser.add_argument("--video-easy-dir", help="DMC-GB's video_easy folder (default: procedural videos)")
    parser.add_argument("--video-hard-dir", help="DMC-GB's video_hard folder (default: procedural videos)")
    parser.add_argument("--davis-dir", help="DAVIS 2017 folder, for the distracting_cs modes (default: procedural videos)")
    parser.add_argument("--overlay-dir", help="overlay images' folder, e.g. Places365 (default: procedural dead leaves)")
    args = parser.parse_args()
    folders = dict(video_easy_dir=args.video_easy_dir, video_hard_dir=args.video_hard_dir, davis_dir=args.davis_dir)
    try:
        check_gallery_args(args)
        frames_by_env = {
            env_id: mode_frames(env_id, args.seed, args.steps, args.modes, args.image_size, **folders)
            for env_id in args.env_ids
        }
        frames_by_env[OVERLAY_ROW] = overlay_row(args.modes, args.image_size, args.seed, args.overlay_dir)
    except envs.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    image = gallery_image(frames_by_env, args.scale)
    image.save(args.out)
    print(
        f"wrote {args.out}: {image.width}x{image.height} px, {len(args.env_ids)} tasks x {len(args.modes)} modes, "
        "and a row of overlay images"
    )


if __name__ == "__main__":
    main()
