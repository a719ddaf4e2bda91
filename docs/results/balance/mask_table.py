"""The mask on the agent over each final checkpoint's measured episodes, per method and mode, over seeds.

    python docs/results/balance/mask_table.py docs/results/balance/runs/*/saliency_figure_step5000.csv

Reads the CSVs that `experiments/saliency_figure.py CHECKPOINT --episodes N` writes beside its picture
(a line per mode and episode), each copied into its run's folder ({task}__{method}__{seed}), and prints
a markdown table: per method and mode, each seed's share of the critic's mask on the agent over its N
episodes (every image; ± the std over its episodes), the mean ± std over seeds (ddof=1), a 95%
Student-t interval of that mean, and chance (the agent's share of the image).
"""

import collections
import csv
import sys
from pathlib import Path

import numpy as np
import scipy.stats

shares = collections.defaultdict(lambda: collections.defaultdict(dict))  # method -> mode -> seed -> rows
for path in map(Path, sys.argv[1:]):
    _, method, seed = path.parent.name.split("__")
    for row in csv.DictReader(path.open()):
        rows = shares[method][row["mode"]].setdefault(int(seed), [])
        rows.append((float(row["mask_on_agent"]), float(row["agent_share"]), int(row["images"])))

print("| method | mode | each seed: share ± std over its episodes (episodes) | mean ± std over seeds | 95% CI | chance |")
print("|---|---|---|---|---|---|")
for method, modes in sorted(shares.items()):
    for mode, seeds in modes.items():
        per_seed, texts, chance = [], [], []
        for seed, rows in sorted(seeds.items()):
            share, agent, images = np.array(rows).T
            pooled = (share * images).sum() / images.sum()  # every image of every episode counts once
            per_seed.append(pooled)
            chance.append((agent * images).sum() / images.sum())
            texts.append(f"{seed}: {100 * pooled:.1f} ± {100 * share.std():.1f}% ({len(rows)})")
        values = np.array(per_seed)
        if len(values) > 1:
            half = scipy.stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
            spread = f"{100 * values.mean():.1f} ± {100 * values.std(ddof=1):.1f}%"
            interval = f"[{100 * max(values.mean() - half, 0):.1f}, {100 * min(values.mean() + half, 1):.1f}]%"
        else:
            spread, interval = f"{100 * values.mean():.1f}%", "n/a (one seed)"
        print(f"| {method} | {mode} | {', '.join(texts)} | {spread} | {interval} | {100 * np.mean(chance):.1f}% |")
