"""Milliseconds per batch of SGQN's overlay images (`envs.OverlayImages.sample`), procedural and from a folder.

    python benchmarks/overlay_speed.py                       # a generated Places365-like folder (256 px JPEGs)
    python benchmarks/overlay_speed.py --image-dir /data/places365_standard/train --batches 100

Each source is timed in its first pass over the pool (every draw reads and resizes its image) and in the steady
state (the procedural bank is all read; a folder larger than the pool reads batch / draws_per_image files per
batch); the procedural steady state is the cost of the crops and flips alone. Without --image-dir, --files JPEGs of
256 x 256 (the size of Places365-standard's images) are written to a temporary folder first: smooth random colour
fields, about 10 KB each. run_plumbing.keep_freed_memory() is called first, as main() does. Medians are reported
(the machine is shared), with their share of an SGQN update (--update-ms, the README's default-flag figure); the
images are needed on aux steps only, every 2nd update.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import envs  # noqa: E402
import run_plumbing  # noqa: E402


def write_folder(folder: str, count: int, size: int = 256):
    """`count` JPEGs of smooth random colour fields (cumulative sums of noise), like natural photos to JPEG."""
    rng = np.random.default_rng(0)
    for i in range(count):
        field = np.cumsum(np.cumsum(rng.standard_normal((size // 4, size // 4, 3)), 0), 1)
        field = (field - field.min()) / np.ptp(field) * 255
        Image.fromarray(field.astype(np.uint8)).resize((size, size), Image.BILINEAR).save(
            os.path.join(folder, f"{i:06d}.jpg"), quality=85
        )


def time_batches(images: envs.OverlayImages, batch: int, count: int) -> list[float]:
    times = []
    for _ in range(count):
        t = time.perf_counter()
        images.sample(batch)
        times.append((time.perf_counter() - t) * 1000)
    return times


def report(name: str, times: list[float], update_ms: float):
    ms = statistics.median(times)
    print(f"{name:<44}{ms:>9.1f}{100 * ms / update_ms:>9.2f}%")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-dir", default=None, help="a folder of jpg/png images (default: generate one)")
    parser.add_argument("--files", type=int, default=10000, help="images to generate without --image-dir (more than the pool)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=84)
    parser.add_argument("--batches", type=int, default=40, help="timed batches of the steady state")
    parser.add_argument("--update-ms", type=float, default=2334.0, help="an SGQN update, for the share column")
    args = parser.parse_args()
    run_plumbing.keep_freed_memory()

    print(f"batch {args.batch_size}, {args.image_size} px")
    print(f"{'source, phase':<44}{'ms':>9}{'update':>10}")
    procedural = envs.OverlayImages(None, args.image_size, seed=0)
    first = time_batches(procedural, args.batch_size, -(-len(procedural) // args.batch_size))
    report(f"procedural ({len(procedural)}), first pass", first, args.update_ms)
    steady = time_batches(procedural, args.batch_size, args.batches)
    report("procedural, steady state (crops, flips)", steady, args.update_ms)
    print(f"  pool: {procedural.pool.nbytes / 1e6:.0f} MB")

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.image_dir
        if folder is None:
            t = time.perf_counter()
            write_folder(tmp, args.files)
            folder = tmp
            print(f"  (wrote {args.files} 256 px JPEGs in {time.perf_counter() - t:.0f} s)")
        images = envs.OverlayImages(folder, args.image_size, seed=0)
        pool = len(images.pool)
        first = time_batches(images, args.batch_size, max(1, pool // args.batch_size))
        report(f"folder ({len(images)} files, pool {pool}), first pass", first, args.update_ms)
        reads = images._reads
        steady = time_batches(images, args.batch_size, args.batches)
        reads = (images._reads - reads) / args.batches
        report(f"folder, steady state ({reads:.0f} reads/batch)", steady, args.update_ms)
        print(f"  pool: {images.pool.nbytes / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
