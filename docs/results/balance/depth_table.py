"""The depth test's table (issue 39, item 2): per run, train return at every evaluation, the mask at 10k frames, the
final checkpoint's return and mask per mode.

    python docs/results/balance/depth_table.py docs/results/balance/runs/*__sgqn{4,11}x16__*

Reads each run folder's `evaluations.csv` (return while training, 5 episodes), `saliency.csv` (the training-time mask
on the agent: one episode, 24 images), `eval_checkpoint_step*.csv` (the final checkpoint, 10 episodes per mode) and
`saliency_figure_step*.csv` (the mask over the same episodes, every image), and prints a markdown table with a row per
run, then the mean ± std over seeds (ddof=1) per network of what varies by seed.
"""

import collections
import csv
import sys
from pathlib import Path

import numpy as np

MODES = ["train", "color_easy", "color_hard", "video_easy", "video_hard"]


def table(path):
    return list(csv.DictReader(path.open()))


def per_key(rows, key, value, weight=None):
    """Mean of `value` per `key` (weighted by `weight`, e.g. a row's images), in first-seen order."""
    sums, weights = collections.defaultdict(float), collections.defaultdict(float)
    for row in rows:
        w = float(row[weight]) if weight else 1.0
        sums[row[key]] += w * float(row[value])
        weights[row[key]] += w
    return {k: sums[k] / weights[k] for k in sums}


print(
    "| run | train return at 5k, 10k, ... frames | mask on agent at 10k frames (train / video_hard) "
    "| final return (train / color_easy / color_hard / video_easy / video_hard) | final mask on agent (same modes) |"
)
print("|---|---|---|---|---|")
by_network = collections.defaultdict(list)
for run in map(Path, sys.argv[1:]):
    returns = per_key([r for r in table(run / "evaluations.csv") if r["mode"] == "train"], "frames", "return")
    early = {(r["frames"], r["mode"]): float(r["mask_on_agent"]) for r in table(run / "saliency.csv")}
    final = per_key(table(next(run.glob("eval_checkpoint_step*[0-9].csv"))), "mode", "return")
    mask = per_key(table(next(run.glob("saliency_figure_step*.csv"))), "mode", "mask_on_agent", weight="images")
    values = [returns["10000"], list(returns.values())[-1], early[("10000", "train")], early[("10000", "video_hard")]]
    by_network[run.name.split("__")[1]].append(values + [final[m] for m in MODES] + [mask[m] for m in MODES])
    print(
        f"| {run.name} | {' '.join(f'{v:.0f}' for v in returns.values())} "
        f"| {100 * early[('10000', 'train')]:.1f}% / {100 * early[('10000', 'video_hard')]:.1f}% "
        f"| {' / '.join(f'{final[m]:.0f}' for m in MODES)} | {' / '.join(f'{100 * mask[m]:.1f}' for m in MODES)}% |"
    )

print()
print(
    "| network, seeds | train return at 10k | at the end | mask at 10k, train | video_hard "
    "| final return, " + " | ".join(MODES) + " | final mask, " + " | ".join(MODES) + " |"
)
print("|---" * 15 + "|")
for network, rows in by_network.items():
    rows = np.array(rows)
    spread = rows.std(0, ddof=1) if len(rows) > 1 else np.zeros(rows.shape[1])
    scale = np.array([1, 1, 100, 100] + [1] * 5 + [100] * 5)
    cells = [
        f"{m * s:.{0 if s == 1 else 1}f} ± {d * s:.{0 if s == 1 else 1}f}{'' if s == 1 else '%'}"
        for m, d, s in zip(rows.mean(0), spread, scale)
    ]
    print(f"| {network}, {len(rows)} | " + " | ".join(cells) + " |")
