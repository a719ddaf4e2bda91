"""Distraction images: background videos for the `video_*` modes and overlay images for SGQN.

Two sources for each:
  * procedural (default): deterministic from a seed, no data to download. A frame is a smooth
    moving two-field colour blend, a few moving soft-edged discs and squares, and a scrolling
    band-limited texture. These are NOT DMC-GB's DAVIS videos: scores on them are not comparable
    with the DMC-GB tables.
  * a folder: `.mp4` files or sub-folders of jpg/png frames for videos (DMC-GB's `video_easy` /
    `video_hard` folders work unchanged; files are used in numeric order, video2 before video10);
    any jpg/png tree (e.g. Places365) for overlay images.
Everything is resized once, at load, to the observation size; only that small copy is kept.
"""
from __future__ import annotations

import functools
import os
import re

import numpy as np
from PIL import Image

from envs import ConfigError  # defined in envs/__init__.py before this module is imported

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm")
IMAGE_EXTS = (".png", ".jpg", ".jpeg")
PROCEDURAL_VIDEO_LENGTH = 500  # frames, about the length of a DMC-GB clip
NUM_VIDEOS = {"video_easy": 10, "video_hard": 100}  # DMC-GB's counts


def natural_key(name: str):
    """Sort key that orders 'video2' before 'video10'."""
    return [int(s) if s.isdigit() else s.lower() for s in re.split(r"(\d+)", name)]


# ----------------------------------------------------------------------------- procedural frames
def _periodic_noise(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth noise in [-1, 1] that tiles (so it can scroll without seams): random coarse grids
    upsampled with wrap-around bilinear interpolation, two octaves."""
    out = np.zeros((size, size), np.float32)
    for cells, weight in ((4, 1.0), (11, 0.5)):
        grid = rng.standard_normal((cells, cells)).astype(np.float32)
        u = np.arange(size) * cells / size
        i0 = u.astype(int)
        i1 = (i0 + 1) % cells
        f = (u - i0).astype(np.float32)
        rows = grid[i0] * (1 - f)[:, None] + grid[i1] * f[:, None]          # (size, cells)
        out += weight * (rows[:, i0] * (1 - f) + rows[:, i1] * f)           # (size, size)
    return out / max(np.abs(out).max(), 1e-6)


def procedural_params(rng: np.random.Generator, size: int, hard: bool) -> dict:
    """Random description of one procedural video; hard videos have more shapes, more texture
    and faster motion."""
    n_shapes, speed, tex_amp = (6, 2.0, 0.35) if hard else (3, 1.0, 0.2)
    return dict(
        size=size,
        palette=rng.uniform(0, 1, (3, 3)).astype(np.float32),              # 3 colours to blend
        freq=rng.uniform(0.5, 3.0, (2, 3, 2)) * 2 * np.pi,                # 2 fields x 3 waves x (x, y)
        vel=rng.uniform(-0.05, 0.05, (2, 3, 2)) * speed,                  # radians per frame
        phase=rng.uniform(0, 2 * np.pi, (2, 3, 2)),
        shape_rgb=rng.uniform(0, 1, (n_shapes, 3)).astype(np.float32),
        shape_r=rng.uniform(0.08, 0.2, n_shapes).astype(np.float32),
        shape_w=rng.uniform(-0.04, 0.04, (n_shapes, 2)) * speed,          # Lissajous paths
        shape_p=rng.uniform(0, 2 * np.pi, (n_shapes, 2)),
        square=rng.random(n_shapes) < 0.5,
        texture=_periodic_noise(rng, size),
        tex_amp=np.float32(tex_amp),
        tex_vel=rng.uniform(-1.0, 1.0, 2) * speed,                        # pixels per frame
    )


def procedural_frame(p: dict, t: int) -> np.ndarray:
    """Frame `t` (HWC uint8) of the video described by `p`; a pure function of (p, t)."""
    s = p["size"]
    x = np.arange(s, dtype=np.float32) / s
    # Two smooth fields, each a sum of separable products of travelling sines: small matmuls of
    # 1-D waves instead of S*S transcendental calls.
    waves = np.sin(p["freq"][..., None] * x + (p["vel"] * t + p["phase"])[..., None]).astype(np.float32)
    field = waves[:, :, 1].transpose(0, 2, 1) @ waves[:, :, 0] / 3            # (2, S, S) in [-1, 1]
    c0, c1, c2 = p["palette"]
    img = c0 + np.tensordot(0.5 + 0.5 * field, np.stack([c1 - c0, c2 - c0]), axes=(0, 0))  # (S, S, 3)
    # Moving soft-edged shapes: a handful, each touching only its bounding box.
    centres = (0.5 + 0.45 * np.sin(p["shape_w"] * t + p["shape_p"])).astype(np.float32)
    for (cx, cy), r, rgb, sq in zip(centres, p["shape_r"], p["shape_rgb"], p["square"]):
        x0, x1 = max(int((cx - r) * s) - 2, 0), min(int((cx + r) * s) + 3, s)
        y0, y1 = max(int((cy - r) * s) - 2, 0), min(int((cy + r) * s) + 3, s)
        if x0 >= x1 or y0 >= y1:
            continue
        dx, dy = np.abs(x[x0:x1] - cx), np.abs(x[y0:y1] - cy)
        d = np.maximum(dx[None, :], dy[:, None]) if sq else np.sqrt(dx[None, :] ** 2 + dy[:, None] ** 2)
        a = np.clip((r - d) * (s / 1.5) + 0.5, 0, 1)[..., None]               # ~1.5 px soft edge
        box = img[y0:y1, x0:x1]
        box += a * (rgb - box)
    # Scrolling texture modulates brightness.
    tex = np.roll(p["texture"], tuple((p["tex_vel"] * t).astype(int)), axis=(0, 1))
    img *= 1 + p["tex_amp"] * tex[..., None]
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


class ProceduralClip:
    """A procedural video: indexable like an array of HWC frames, computed on demand."""

    def __init__(self, params: dict, length: int = PROCEDURAL_VIDEO_LENGTH):
        self.params, self.length = params, length

    def __len__(self):
        return self.length

    def __getitem__(self, t: int) -> np.ndarray:
        return procedural_frame(self.params, int(t) % self.length)


# ----------------------------------------------------------------------------- files
def _resize(img: Image.Image, size: int) -> np.ndarray:
    return np.asarray(img.convert("RGB").resize((size, size), Image.BILINEAR))


def _image_files(folder: str, recursive: bool) -> list[str]:
    if recursive:
        found = [os.path.join(root, f) for root, _, files in os.walk(folder) for f in files]
    else:
        found = [os.path.join(folder, f) for f in os.listdir(folder)]
    return sorted((f for f in found if f.lower().endswith(IMAGE_EXTS)), key=natural_key)


@functools.lru_cache(maxsize=8)  # shared by all envs of the process; 8 clips at 84 px ~ 85 MB
def load_clip(path: str, size: int) -> np.ndarray:
    """(T, size, size, 3) uint8 frames of a video file or of a folder of frames, resized on load."""
    if os.path.isdir(path):
        frames = [_resize(Image.open(f), size) for f in _image_files(path, recursive=False)]
    else:
        import imageio.v2 as imageio  # lazy: only needed for user videos

        with imageio.get_reader(path, format="FFMPEG") as reader:
            frames = [_resize(Image.fromarray(f), size) for f in reader]
    if not frames:
        raise ConfigError(f"video {path!r} has no frames")
    clip = np.stack(frames)
    clip.flags.writeable = False
    return clip


class VideoSource:
    """The background videos of one mode: `len(src)` videos, `src.clip(k)` -> frames indexable by t.

    With `video_dir=None` the set is procedural and fixed (same for every env and seed, like
    DMC-GB's data). `video_dir` may hold `.mp4` files and/or frame sub-folders; if it holds a
    sub-folder named after the mode (DMC-GB's data root), that sub-folder is used.
    """

    def __init__(self, mode: str, size: int, video_dir: str | None = None):
        self.mode, self.size, self.paths = mode, size, None
        if video_dir is None:
            return
        video_dir = os.path.expanduser(video_dir)
        if not os.path.isdir(video_dir):
            raise ConfigError(f"video_dir {video_dir!r} does not exist or is not a folder")
        if os.path.isdir(os.path.join(video_dir, mode)):
            video_dir = os.path.join(video_dir, mode)
        entries = sorted(os.listdir(video_dir), key=natural_key)
        self.paths = [
            os.path.join(video_dir, e) for e in entries
            if e.lower().endswith(VIDEO_EXTS)
            or (os.path.isdir(os.path.join(video_dir, e)) and _image_files(os.path.join(video_dir, e), False))
        ]
        if not self.paths:
            raise ConfigError(
                f"video_dir {video_dir!r} holds no videos ({'/'.join(VIDEO_EXTS)} files or folders of jpg/png frames)")

    def __len__(self):
        return NUM_VIDEOS[self.mode] if self.paths is None else len(self.paths)

    def clip(self, k: int):
        if self.paths is None:
            set_id = 0 if self.mode == "video_easy" else 1   # fixed sets: not the env's seed
            rng = np.random.default_rng([set_id, k])
            return ProceduralClip(procedural_params(rng, self.size, hard=self.mode == "video_hard"))
        return load_clip(self.paths[k], self.size)


# ----------------------------------------------------------------------------- overlay images
class OverlayImages:
    """Images for SGQN's random overlay: `sample(n)` -> uint8 (n, 3, S, S) from a seeded generator.

    Default: a bank of 500 procedural images (frames of random procedural videos, from `seed`,
    a different family of draws from the eval background sets), built in well under a second.
    `image_dir`: every jpg/png under it (recursively) is indexed; a seeded random subset of at
    most `max_images` is loaded and resized once (Places365 has 1.8M images; 2048 at 84 px is
    43 MB and loads in a few seconds).
    """

    def __init__(self, image_dir: str | None = None, image_size: int = 84, seed: int = 0,
                 max_images: int = 2048):
        self.rng = np.random.default_rng(seed)
        if image_dir is None:
            bank_rng = np.random.default_rng([2, seed])
            images = [procedural_frame(procedural_params(bank_rng, image_size, hard=True),
                                       int(bank_rng.integers(PROCEDURAL_VIDEO_LENGTH)))
                      for _ in range(500)]
        else:
            image_dir = os.path.expanduser(image_dir)
            if not os.path.isdir(image_dir):
                raise ConfigError(f"image_dir {image_dir!r} does not exist or is not a folder")
            files = _image_files(image_dir, recursive=True)
            if not files:
                raise ConfigError(f"image_dir {image_dir!r} holds no jpg/png images")
            if len(files) > max_images:
                files = [files[i] for i in np.sort(self.rng.choice(len(files), max_images, replace=False))]
            images = [_resize(Image.open(f), image_size) for f in files]
        self.images = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))  # (N, 3, S, S)

    def __len__(self):
        return len(self.images)

    def sample(self, n: int) -> np.ndarray:
        return self.images[self.rng.integers(len(self.images), size=n)]
