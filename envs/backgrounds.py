"""Distraction images: background videos for the `video_*` modes and overlay images for SGQN.

Two sources for each:
  * procedural (default): deterministic from a seed, no data to download. A video frame is a smooth
    moving two-field colour blend, a few moving soft-edged discs and squares, and a scrolling
    band-limited texture. These are NOT DMC-GB's DAVIS videos: scores on them are not comparable
    with the DMC-GB tables. An overlay image comes from another generator, dead leaves (below), so
    that no method trains on the family its video tests are drawn from (as Places365 photos are not
    DAVIS videos in the paper).
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
        rows = grid[i0] * (1 - f)[:, None] + grid[i1] * f[:, None]  # (size, cells)
        out += weight * (rows[:, i0] * (1 - f) + rows[:, i1] * f)  # (size, size)
    return out / max(np.abs(out).max(), 1e-6)


def procedural_params(rng: np.random.Generator, size: int, hard: bool) -> dict:
    """Random description of one procedural video; hard videos have more shapes, more texture
    and faster motion."""
    n_shapes, speed, tex_amp = (6, 2.0, 0.35) if hard else (3, 1.0, 0.2)
    return dict(
        size=size,
        palette=rng.uniform(0, 1, (3, 3)).astype(np.float32),  # 3 colours to blend
        freq=rng.uniform(0.5, 3.0, (2, 3, 2)) * 2 * np.pi,  # 2 fields x 3 waves x (x, y)
        vel=rng.uniform(-0.05, 0.05, (2, 3, 2)) * speed,  # radians per frame
        phase=rng.uniform(0, 2 * np.pi, (2, 3, 2)),
        shape_rgb=rng.uniform(0, 1, (n_shapes, 3)).astype(np.float32),
        shape_r=rng.uniform(0.08, 0.2, n_shapes).astype(np.float32),
        shape_w=rng.uniform(-0.04, 0.04, (n_shapes, 2)) * speed,  # Lissajous paths
        shape_p=rng.uniform(0, 2 * np.pi, (n_shapes, 2)),
        square=rng.random(n_shapes) < 0.5,
        texture=_periodic_noise(rng, size),
        tex_amp=np.float32(tex_amp),
        tex_vel=rng.uniform(-1.0, 1.0, 2) * speed,  # pixels per frame
    )


def procedural_frame(p: dict, t: int) -> np.ndarray:
    """Frame `t` (HWC uint8) of the video described by `p`; a pure function of (p, t)."""
    s = p["size"]
    x = np.arange(s, dtype=np.float32) / s
    # Two smooth fields, each a sum of separable products of travelling sines: small matmuls of
    # 1-D waves instead of S*S transcendental calls.
    waves = np.sin(p["freq"][..., None] * x + (p["vel"] * t + p["phase"])[..., None]).astype(np.float32)
    field = waves[:, :, 1].transpose(0, 2, 1) @ waves[:, :, 0] / 3  # (2, S, S) in [-1, 1]
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
        a = np.clip((r - d) * (s / 1.5) + 0.5, 0, 1)[..., None]  # ~1.5 px soft edge
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
    img.draft("RGB", (size, size))  # JPEG: decode at the smallest 1/2^k scale still >= size (several x faster)
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
            os.path.join(video_dir, e)
            for e in entries
            if e.lower().endswith(VIDEO_EXTS)
            or (os.path.isdir(os.path.join(video_dir, e)) and _image_files(os.path.join(video_dir, e), False))
        ]
        if not self.paths:
            raise ConfigError(
                f"video_dir {video_dir!r} holds no videos ({'/'.join(VIDEO_EXTS)} files or folders of jpg/png frames)"
            )

    def __len__(self):
        return NUM_VIDEOS[self.mode] if self.paths is None else len(self.paths)

    def clip(self, k: int):
        if self.paths is None:
            set_id = 0 if self.mode == "video_easy" else 1  # fixed sets: not the env's seed
            rng = np.random.default_rng([set_id, k])
            return ProceduralClip(procedural_params(rng, self.size, hard=self.mode == "video_hard"))
        return load_clip(self.paths[k], self.size)


# ----------------------------------------------------------------------------- overlay images
PROCEDURAL_OVERLAY_IMAGES = 500  # the default source: this many procedural images, cropped anew at every draw


def seed_key(seed) -> list[int]:
    """Integers naming `seed` (an int or a numpy SeedSequence), to derive further fixed streams from it
    (`default_rng([family, k, *seed_key(seed)])`) without spawning from, and so changing, the caller's sequence."""
    if isinstance(seed, np.random.SeedSequence):
        return [int(w) for w in seed.generate_state(4)]
    return [int(seed)]


def random_resized_crop_boxes(
    rng: np.random.Generator, heights, widths, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), tries: int = 10
):
    """Crop boxes (top, left, height, width), one per image of size (heights[i], widths[i]), drawn as torchvision's
    `RandomResizedCrop.get_params` draws them: up to `tries` draws of an area fraction uniform in `scale` and an
    aspect ratio log-uniform in `ratio`; the first that fits is placed uniformly at random; if none fits, a centre
    crop of the whole image, narrowed to the nearest allowed aspect ratio."""
    heights, widths = np.asarray(heights, np.int64), np.asarray(widths, np.int64)
    n, rows = len(heights), np.arange(len(heights))
    target_area = (heights * widths)[:, None] * rng.uniform(scale[0], scale[1], (n, tries))
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]), (n, tries)))
    w = np.rint(np.sqrt(target_area * aspect)).astype(np.int64)
    h = np.rint(np.sqrt(target_area / aspect)).astype(np.int64)
    fits = (w > 0) & (h > 0) & (w <= widths[:, None]) & (h <= heights[:, None])
    first = fits.argmax(axis=1)
    found = fits[rows, first]
    in_ratio = widths / heights
    fallback_w = np.where(in_ratio > ratio[1], np.rint(heights * ratio[1]), widths)
    fallback_h = np.where(in_ratio < ratio[0], np.rint(widths / ratio[0]), heights)
    w = np.where(found, w[rows, first], fallback_w).astype(np.int64)
    h = np.where(found, h[rows, first], fallback_h).astype(np.int64)
    top = np.where(found, rng.integers(0, heights - h + 1), (heights - h) // 2)
    left = np.where(found, rng.integers(0, widths - w + 1), (widths - w) // 2)
    return top, left, h, w


def crop_taps(boxes, sizes, stored: int, out: int, flips):
    """Where the bilinear resize of each crop reads its stored image: per output row and column, the two pixels and
    the weight of the second, ((y0, y1, wy), (x0, x1, wx)), each (n, out); `flips` mirrors the columns."""
    centres = (np.arange(out) + 0.5) / out

    def taps(start, length, original):  # sample positions in stored pixels -> (low index, high index, weight)
        pos = np.clip((start[:, None] + centres * length[:, None]) * (stored / original)[:, None] - 0.5, 0, stored - 1)
        low = pos.astype(np.int64)
        return low, np.minimum(low + 1, stored - 1), (pos - low).astype(np.float32)

    top, left, h, w = boxes
    return taps(top, h, sizes[:, 0]), tuple(np.where(flips[:, None], a[:, ::-1], a) for a in taps(left, w, sizes[:, 1]))


def resized_crops(pool: np.ndarray, slots, boxes, sizes, out: int, flips) -> np.ndarray:
    """(n, 3, out, out) uint8: bilinear resizes (pixel centres, as align_corners=False) of the crop `boxes` = (top,
    left, height, width), given in pixels of the original images of `sizes` (n x (height, width)), read from their
    square copies `pool[slots]`; `flips` mirrors a crop horizontally. Separable: rows, then columns."""
    n, stored = len(slots), pool.shape[1]
    (y0, y1, wy), (x0, x1, wx) = crop_taps(boxes, sizes, stored, out, flips)

    def lerp(low, high, weight):  # in place, float32: low + weight * (high - low)
        high -= low
        high *= weight
        low += high
        return low

    rows = lerp(
        pool[slots[:, None], y0].astype(np.float32), pool[slots[:, None], y1].astype(np.float32), wy[:, :, None, None]
    )  # (n, out, stored, 3)
    # Columns: one gather of whole RGB float triples (a 12-byte item each) per tap, from the flattened rows.
    pixels = rows.view(np.dtype((np.void, 12))).reshape(-1)
    row_start = (np.arange(n * out) * stored).reshape(n, out, 1)
    left_tap, right_tap = (
        np.take(pixels, row_start + x[:, None, :]).view(np.float32).reshape(n, out, out, 3) for x in (x0, x1)
    )
    image = lerp(left_tap, right_tap, wx[:, None, :, None])
    image += 0.5  # round
    return np.ascontiguousarray(image.astype(np.uint8).transpose(0, 3, 1, 2))


def send(array, device):
    """A numpy array as a tensor on `device`; to a GPU from page-locked memory, without waiting."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor.pin_memory().to(device, non_blocking=True) if torch.device(device).type == "cuda" else tensor.to(device)


def resized_crops_on(pool, slots, taps, device):
    """`resized_crops` on a torch device, from the pool there (n_pool, stored, stored, 3) uint8 and the crops' taps
    (`crop_taps`, made on the host): float32 (n, 3, out, out) holding the same integers up to float rounding."""
    import torch

    (y0, y1, wy), (x0, x1, wx) = ((send(a, device) for a in axis) for axis in taps)
    slots = send(slots, device)[:, None]
    top, bottom = pool[slots, y0].float(), pool[slots, y1].float()  # (n, out, stored, 3)
    rows = torch.lerp(top, bottom, wy[:, :, None, None])
    n, out, stored, _ = rows.shape
    left, right = (rows.gather(2, x[:, None, :, None].expand(n, out, out, 3)) for x in (x0, x1))  # (n, out, out, 3)
    return torch.lerp(left, right, wx[:, None, :, None]).add_(0.5).floor_().permute(0, 3, 1, 2).contiguous()


def dead_leaves_image(rng: np.random.Generator, size: int, leaves: int = 120) -> np.ndarray:
    """(size, size, 3) uint8: a dead-leaves image (Lee, Mumford & Huang 2001; as synthetic training images, Baradad
    et al. 2021, "Learning to see by looking at noise"): `leaves` opaque discs, squares and ellipses of random colour
    dropped one over another, radii power-law distributed (density r^-3 between 3% and 50% of the image: the scale
    invariance of natural images), each shaded by its own linear gradient. The default overlay family: unlike the
    video generator (`procedural_frame`: sine fields, a few moving shapes and a scrolling texture), it has no smooth
    background and no texture, only occluding edges at every scale, as photos have.
    The leaves are painted in order, each over the canvas inside its bounding box only (most leaves are small: the
    boxes cover about 2.3 images in all, where testing every leaf at every pixel covers 120), so that the last leaf
    over a pixel shows: 12-17x faster than that test at 126 px (4-9 ms an image against 62-122 ms, medians on a busy
    2-core machine). In float64, with the same sums per pixel as that test, so that the images are its images bit
    for bit (float32 would move a pixel on a leaf's edge now and then, and is no faster: what costs is numpy's calls,
    a few per leaf, not the pixels)."""
    r_min, r_max = 0.03, 0.5
    u = rng.uniform(0, 1, leaves)
    radius = (r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5  # inverse CDF of p(r) ~ r^-3 on [r_min, r_max]
    centre = rng.uniform(-0.1, 1.1, (leaves, 2))
    kind = rng.integers(0, 3, leaves)  # 0 disc, 1 square, 2 ellipse
    aspect = np.where(kind == 2, rng.uniform(0.3, 1.0, leaves), 1.0)
    angle = rng.uniform(0, np.pi, leaves)
    colour = rng.uniform(0, 1, (leaves, 3))
    gradient = rng.normal(0, 0.6, (leaves, 2))  # brightness change per image width, along x and y
    cos, sin = np.cos(angle), np.sin(angle)
    # How far each leaf reaches from its centre along x and y: a square of half-side r, r (|cos| + |sin|) (its
    # corners); an ellipse of half-axes r (along) and r * aspect (across), r sqrt(cos^2 + aspect^2 sin^2) along x and
    # r sqrt(sin^2 + aspect^2 cos^2) along y (a disc: r).
    square = kind == 1
    reach_x = radius * np.where(square, np.abs(cos) + np.abs(sin), np.hypot(cos, aspect * sin))
    reach_y = radius * np.where(square, np.abs(cos) + np.abs(sin), np.hypot(sin, aspect * cos))
    # Pixel i's centre is at (i + 0.5) / size; the boxes take a pixel more each side, so that rounding here never
    # leaves out a pixel the leaf covers (which pixels it covers is decided below, exactly).
    first_column = np.clip(np.floor((centre[:, 0] - reach_x) * size - 0.5).astype(int), 0, size)
    end_column = np.clip(np.ceil((centre[:, 0] + reach_x) * size - 0.5).astype(int) + 1, 0, size)
    first_row = np.clip(np.floor((centre[:, 1] - reach_y) * size - 0.5).astype(int), 0, size)
    end_row = np.clip(np.ceil((centre[:, 1] + reach_y) * size - 0.5).astype(int) + 1, 0, size)
    # A leaf's rotated coordinates at pixel (row, column): along = dx cos + dy sin, across = (dy cos - dx sin) / aspect,
    # dx and dy from its centre; their four products, for every leaf and every row or column at once.
    x = (np.arange(size) + 0.5) / size
    dx, dy = x[None, :] - centre[:, 0, None], x[None, :] - centre[:, 1, None]  # (leaves, size) each
    dx_cos, dx_sin, dy_cos, dy_sin = dx * cos[:, None], dx * sin[:, None], dy * cos[:, None], dy * sin[:, None]
    radius_squared = radius**2
    top = np.zeros((size, size), np.intp)  # the last leaf over each pixel; the first leaf is the ground, everywhere
    for leaf in range(1, leaves):
        rows, columns = slice(first_row[leaf], end_row[leaf]), slice(first_column[leaf], end_column[leaf])
        if rows.start >= rows.stop or columns.start >= columns.stop:
            continue  # off the image
        along = dx_cos[leaf, None, columns] + dy_sin[leaf, rows, None]
        across = dy_cos[leaf, rows, None] - dx_sin[leaf, None, columns]
        if kind[leaf] == 2:  # (the other kinds' aspect is 1: dividing by it changes nothing)
            across /= aspect[leaf]
        if square[leaf]:
            inside = np.maximum(np.abs(along), np.abs(across)) <= radius[leaf]
        else:
            inside = along**2 + across**2 <= radius_squared[leaf]
        top[rows, columns][inside] = leaf
    yy, xx = np.meshgrid(x, x, indexing="ij")
    shade = 1 + gradient[top, 0] * (xx - centre[top, 0]) + gradient[top, 1] * (yy - centre[top, 1])
    return (np.clip(colour[top] * shade[..., None], 0, 1) * 255).astype(np.uint8)


class OverlayImages:
    """Images for SGQN's random overlay, drawn as the original draws Places365: `sample(n)` -> uint8 (n, 3, S, S).

    Source: every jpg/png under `image_dir` (recursively; e.g. Places365) in a seeded shuffled order, or by default
    500 procedural dead-leaves images (`dead_leaves_image`, from `seed`): a generator no evaluation mode draws its
    backgrounds from, so that training on overlays does not train on the test distractions' family. Every draw is a random resized crop to S x S (area 8-100% of the image, aspect ratio 3/4-4/3:
    torchvision's defaults, with its centre-crop fallback) and a horizontal flip with probability 1/2, for the
    whole batch at once (`random_resized_crop_boxes`, `resized_crops`).
    Memory bound: an image is read when first drawn, resized to 1.5 S (126 px at S = 84: a crop is at most a 1.5x
    reduction, and Places' 256 px JPEGs decode at half scale, 4x faster; the original crops the 256 px images) and
    kept in a pool of at most `max_images`: max_images x (1.5 S)^2 x 3 bytes, 390 MB at the defaults; the
    procedural 500 take 24 MB. Draws cycle through the pool in a fixed shuffled order, so an image recurs exactly
    every len(pool) draws (8192: 64 batches of 128), each time with a new crop and flip. A source that fits is
    read once. A larger one streams through it: a pooled image is replaced by the next file of the stream after
    `draws_per_image` draws, so that in the steady state a batch of 128 reads 128 / 8 = 16 files (the first pass
    reads one per draw, or all at once with `fill()`); cost in benchmarks/overlay_speed.py. `last_drawn`: stream
    indices of the last batch.
    """

    def __init__(
        self, image_dir: str | None = None, image_size: int = 84, seed=0, max_images: int = 8192, draws_per_image: int = 8
    ):
        self.rng = np.random.default_rng(seed)  # seed: an int or a numpy SeedSequence
        self.image_size, self.stored_size = image_size, (3 * image_size + 1) // 2
        if image_dir is None:
            self._procedural_key = seed_key(seed)
            self.files = list(range(PROCEDURAL_OVERLAY_IMAGES))
        else:
            image_dir = os.path.expanduser(image_dir)
            if not os.path.isdir(image_dir):
                raise ConfigError(f"image_dir {image_dir!r} does not exist or is not a folder")
            files = _image_files(image_dir, recursive=True)
            if not files:
                raise ConfigError(f"image_dir {image_dir!r} holds no jpg/png images")
            self.files = [files[i] for i in self.rng.permutation(len(files))]
        n = min(max_images, len(self.files))
        self.pool = np.empty((n, self.stored_size, self.stored_size, 3), np.uint8)  # pages are touched when filled
        self.sizes = np.ones((n, 2), np.int64)  # original (height, width) of each pooled image
        self.source = np.full(n, -1)  # its index in the stream (-1: not read yet)
        self._draws_left = np.zeros(n, np.int64)  # draws before the slot is refilled
        self._lifetime = draws_per_image if len(self.files) > n else np.iinfo(np.int64).max // 2
        self._reads, self._order, self._pos = 0, self.rng.permutation(n), 0
        self.last_drawn = None
        self._device_pools, self._stale, self._fresh_reads = {}, {}, set()  # sample_on's copies of the pool

    def __len__(self):
        return len(self.files)

    def _read(self, slot: int):
        """Fill `slot` with the next image of the stream."""
        k = self._reads % len(self.files)
        if isinstance(self.files[k], int):
            rng = np.random.default_rng([2, self.files[k], *self._procedural_key])
            image = dead_leaves_image(rng, self.stored_size)
            self.sizes[slot] = self.stored_size, self.stored_size
        else:
            with Image.open(self.files[k]) as f:
                self.sizes[slot] = f.height, f.width
                image = _resize(f, self.stored_size)
        self.pool[slot], self.source[slot] = image, k
        self._fresh_reads.add(int(slot))
        # When streaming, the first fill staggers the lifetimes so that refills spread evenly over later passes.
        streaming_first_fill = len(self.files) > len(self.pool) > self._reads
        self._draws_left[slot] = 1 + self._reads % self._lifetime if streaming_first_fill else self._lifetime
        self._reads += 1

    def fill(self):
        """Read every slot not read yet, now rather than at its first draw, so that the draws that follow read nothing
        until a streamed slot is due: for benchmarks that time the draws without the one-time reads (the procedural
        bank: 500 dead-leaves images to make). The pool holds the images the first pass would have read, but put in
        slot order, not in the order the draws reach the slots: the draws that follow show them in another order
        than they would without fill()."""
        for slot in np.flatnonzero(self.source < 0):
            self._read(slot)

    def _next_slots(self, n: int) -> np.ndarray:
        """The next n pool slots, cycling in a fixed shuffled order: a slot recurs exactly every len(pool) draws."""
        slots = self._order[(self._pos + np.arange(n)) % len(self._order)]
        self._pos = (self._pos + n) % len(self._order)
        return slots

    def _draw(self, n: int):
        """The next n draws: their pool slots (read in when due), crop boxes, original sizes and flips."""
        slots = self._next_slots(n)
        for slot in np.unique(slots[self._draws_left[slots] <= 0]):
            self._read(slot)
        np.subtract.at(self._draws_left, slots, 1)
        self.last_drawn = self.source[slots]
        sizes = self.sizes[slots]
        boxes = random_resized_crop_boxes(self.rng, sizes[:, 0], sizes[:, 1])
        flips = self.rng.random(n) < 0.5
        return slots, boxes, sizes, flips

    def sample(self, n: int) -> np.ndarray:
        """(n, 3, S, S) uint8 images, made on the host."""
        slots, boxes, sizes, flips = self._draw(n)
        return resized_crops(self.pool, slots, boxes, sizes, self.image_size, flips)

    def sample_on(self, n: int, device):
        """The same draws as `sample(n)` would make, as a float32 tensor (n, 3, S, S) made on `device`: the pool is
        uploaded once (then each slot read in since, before the draw that uses it), the host draws the crops and
        works out their taps (a few KB), and the resize runs on the device. Equal to `sample`'s images up to float
        rounding (a value may differ by 1 where a pixel lands on .5). On the CPU, `sample`'s numpy resize (2.5x
        faster there than torch's)."""
        import torch

        if torch.device(device).type == "cpu":
            return torch.from_numpy(self.sample(n)).float()
        return self.resized_on(n, device)

    def resized_on(self, n: int, device):
        """`sample_on`'s device path, on any device (on the CPU too: the tests compare it with `sample`)."""
        import torch

        slots, boxes, sizes, flips = self._draw(n)
        key = str(torch.device(device))
        if key not in self._device_pools:
            self._device_pools[key] = torch.tensor(self.pool, device=device)  # a copy, also on the CPU
            self._stale[key] = set()
        for stale in self._stale.values():
            stale.update(self._fresh_reads)
        self._fresh_reads.clear()
        if self._stale[key]:
            changed = np.array(sorted(self._stale[key]))
            self._device_pools[key][send(changed, device)] = send(self.pool[changed], device)
            self._stale[key].clear()
        taps = crop_taps(boxes, sizes, self.pool.shape[1], self.image_size, flips)
        return resized_crops_on(self._device_pools[key], slots, taps, device)
