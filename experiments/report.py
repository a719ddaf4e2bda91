"""Report of a sweep: the paper's table, aggregate scores with confidence intervals, and plots.

Reads every run folder under RUNS_DIR (searched recursively: a folder with `args.json` and
`evaluations.csv`, as `sgqn.py`, `sac_baseline.py` and `soda.py` write them; TensorBoard files are not read;
several RUNS_DIRs, e.g. sweeps made on different machines, are read as one),
groups the runs by method (`exp_name`) and task (`env_id`), and writes into `--out` (methods in the
paper's column order, sac, rad, soda, svea, sgqn, then drq beside them, then any other alphabetically;
each of these six keeps its colour in every plot):

  table.md             the paper's layout: one row per task, one column per method and mode; a cell
                       is mean ± std over seeds of each seed's mean evaluation return, with the
                       number of seeds, at the last step that every run of the cell evaluated (or
                       `--step`); an average row. Then per method and task: every mode, the
                       generalization gap (train - video_hard) and the wall time per finished run; one line
                       per run; and what was left out.
  evaluations.md       every evaluation: per task and mode, a row per evaluated step, a column per
                       method: the return (mean ± std over seeds) and the mask on the agent.
  aggregates.md        per mode, across tasks and seeds: IQM and mean of return / 1000 with 95%
                       stratified-bootstrap confidence intervals, and the probability of improvement
                       of each method over each other (Agarwal et al. 2021, with rliable).
  curves_{env_id}.png  learning curves: one panel per mode, one line per method (mean over seeds,
                       shaded 95% confidence band), x in frames.
  aggregate_iqm.png    IQM of return / 1000 per mode and method with its 95% CI.
  saliency_{env_id}.png where the critic's saliency mask lands: per mode, the share of its pixels on
                       the agent (mean over seeds) against the agent's share of the image (chance),
                       x in frames; from each run's `saliency.csv`. table.md has the same at the last
                       step every run of a method and task measured (or `--step`).

    python experiments/report.py runs/ --out report/
    python experiments/report.py runs/ --out report/ --step 12500 --reps 5000
    python experiments/report.py cluster_a/runs cluster_b/runs --out report/

A run's `eval_checkpoint_step{N}.csv` (and `eval_checkpoint_step{N}_saliency.csv`) files (`--eval-checkpoint` evaluations of its checkpoints,
made after training, e.g. on modes it did not evaluate while training) fill the modes and steps its
`evaluations.csv` lacks; where it has both, the one with more episodes counts (its own on a tie). So do
the mask measurements of `saliency_figure_step{N}.csv` (`experiments/saliency_figure.py CHECKPOINT
--episodes N`: every image of N episodes per mode, pooled), where they hold more images. Partial sweeps (runs still
going, unequal seeds, missing modes, runs without evaluations yet, malformed files) are reported as
far as they go, with one line for each thing left out, or taken from elsewhere, and why.
"""

import dataclasses
import itertools
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402
import tyro  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402
from rliable import library as rly  # noqa: E402
from rliable import metrics  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import envs  # noqa: E402

CSV_HEADER = ["step", "frames", "mode", "episode", "return"]
SALIENCY_HEADER = ["step", "frames", "mode", "mask_on_agent", "agent_share", "images"]
FIGURE_HEADER = ["mode", "episode", "return", "mask_on_agent", "agent_share", "images"]  # saliency_figure.py's CSV
RETURN_RANGE = (0.0, 1000.0)  # a DMC episode: 1000 physics steps, each rewarded in [0, 1]
# The sweep's method names (experiments/sweep.py) in the paper's column order (SAC, RAD, SODA, SVEA, SGQN),
# DrQ beside them: the tables' columns and rows, the legends and the colours follow it.
METHOD_ORDER = ("sac", "rad", "soda", "svea", "sgqn", "drq")


@dataclasses.dataclass
class Args:
    runs_dirs: Annotated[
        list[str], tyro.conf.Positional, tyro.conf.arg(metavar="RUNS_DIR...", help_behavior_hint="(required)")
    ]
    """folders holding the run folders (searched recursively for `args.json`); one or more"""
    out: str = "report"
    """folder to write table.md, aggregates.md and the PNG plots into (created if missing)"""
    step: int | None = None
    """agent step to report at; default: for each task, method and mode, the last step all its runs evaluated"""
    reps: int = 2000
    """bootstrap resamples for each confidence interval"""
    seed: int = 0
    """seed of the bootstrap resampling (same seed, same intervals)"""


@dataclasses.dataclass
class Run:
    """One training run as its files describe it."""

    name: str  # folder, relative to RUNS_DIR (prefixed with it when several are read)
    method: str  # args.json's exp_name
    env_id: str
    seed: int
    total_timesteps: int | None
    returns: dict  # {mode: {step: array of the episode returns of that evaluation}}
    frames: dict  # {step: frames}
    summary: dict | None  # summary.json; None while the run goes on, or after a hard kill
    saliency: dict = dataclasses.field(default_factory=dict)  # {mode: {step: (mask_on_agent, agent_share)}}

    def last_step(self) -> int:
        return max(max(steps) for steps in self.returns.values())


@dataclasses.dataclass
class Cell:
    """One method on one task and mode, at one step: each seed's mean return over its episodes."""

    step: int
    frames: int
    runs: list
    means: np.ndarray  # one per run, in the order of `runs`


# ---------------------------------------------------------------------------------------------
# Reading runs
# ---------------------------------------------------------------------------------------------
def read_evaluations(path: Path, name: str) -> tuple[dict | None, dict, list[str]]:
    """{(mode, step, episode): return} and {step: frames} of one evaluations CSV (None if the file
    is unusable), and one line for each thing of it that was left out."""
    # Plain comma splitting (the format has no quoting): a line cut short by a hard kill, or bytes
    # that are not text, make that one line malformed rather than the whole file unreadable.
    lines = path.read_text(errors="replace").splitlines()
    if not lines or lines[0].split(",") != CSV_HEADER:
        found = f"'{lines[0][:60]}'" if lines else "nothing (an empty file)"
        return None, {}, [f"{path.name} starts with {found}, expected '{','.join(CSV_HEADER)}'"]
    episodes, frames, bad_lines = {}, {}, []
    for line, row in enumerate((text.split(",") for text in lines[1:]), start=2):
        try:
            step, frame, mode, episode, ret = int(row[0]), int(row[1]), row[2], int(row[3]), float(row[4])
            if len(row) != 5 or not mode or not math.isfinite(ret):
                raise ValueError
        except (ValueError, IndexError):
            bad_lines.append(line)
            continue
        episodes[mode, step, episode] = ret  # an evaluation repeated after a resume replaces the first
        frames[step] = frame
    notes = []
    if bad_lines:
        shown = ", ".join(map(str, bad_lines[:5])) + (", ..." if len(bad_lines) > 5 else "")
        notes.append(f"ignored {len(bad_lines)} malformed line(s) of {name}/{path.name} (line {shown})")
    return episodes, frames, notes


def read_saliency(folder: Path, name: str) -> tuple[dict, dict, list[str]]:
    """{mode: {step: (mask_on_agent, agent_share)}} and {step: frames} from a run's saliency.csv, its
    checkpoints' eval_checkpoint_step{N}_saliency.csv and saliency_figure_step{N}.csv filling the (mode,
    step) pairs it lacks (or measured on fewer images); and one line for each file or line left out, or
    measurement taken from a figure's CSV."""
    saliency, frames, notes, images = {}, {}, [], {}  # images: {(mode, step): images measured}
    for path in [folder / "saliency.csv"] + sorted(folder.glob("eval_checkpoint_step*_saliency.csv")):
        if not path.exists():
            continue
        lines = path.read_text(errors="replace").splitlines()
        if not lines or lines[0].split(",") != SALIENCY_HEADER:
            notes.append(f"ignored {name}/{path.name}: expected the header '{','.join(SALIENCY_HEADER)}'")
            continue
        bad = 0
        for row in (text.split(",") for text in lines[1:]):
            try:
                step, frame, mode, on_agent, share = int(row[0]), int(row[1]), row[2], float(row[3]), float(row[4])
                count = int(row[5])
                if len(row) != 6 or not mode or not (0 <= on_agent <= 1 and 0 <= share <= 1) or count < 1:
                    raise ValueError
            except (ValueError, IndexError):
                bad += 1
                continue
            if count > images.get((mode, step), 0):  # the measurement on more images; the run's own on a tie
                saliency.setdefault(mode, {})[step] = (on_agent, share)
                frames[step], images[mode, step] = frame, count
        if bad:
            notes.append(f"ignored {bad} malformed line(s) of {name}/{path.name}")
    # `experiments/saliency_figure.py CHECKPOINT --episodes N` measures the final checkpoint's mask over
    # every image of N episodes per mode (a line per mode and episode): pooled over its images, it
    # counts where it measured more images than the run's own check.
    for path in sorted(folder.glob("saliency_figure_step*.csv")):
        lines = path.read_text(errors="replace").splitlines()
        try:
            step = int(path.stem.removeprefix("saliency_figure_step"))
            if not lines or lines[0].split(",") != FIGURE_HEADER:
                raise ValueError
            pooled = {}  # mode: [sum of mask_on_agent x images, sum of agent_share x images, images]
            for row in (text.split(",") for text in lines[1:]):
                on_agent, share, count = float(row[3]), float(row[4]), int(row[5])
                if len(row) != 6 or not row[0] or not (0 <= on_agent <= 1 and 0 <= share <= 1) or count < 1:
                    raise ValueError
                sums = pooled.setdefault(row[0], [0.0, 0.0, 0])
                sums[0], sums[1], sums[2] = sums[0] + on_agent * count, sums[1] + share * count, sums[2] + count
        except (ValueError, IndexError):
            notes.append(f"ignored {name}/{path.name}: expected the header '{','.join(FIGURE_HEADER)}' and its lines")
            continue
        by_counts = {}  # (images measured here, the run's own): modes, one line per pair
        for mode, (on_agent, share, count) in pooled.items():
            if count > images.get((mode, step), 0):
                saliency.setdefault(mode, {})[step] = (on_agent / count, share / count)
                by_counts.setdefault((count, images.get((mode, step), 0)), []).append(mode)
        for (count, fewer), modes in sorted(by_counts.items()):
            notes.append(
                f"took the mask on {', '.join(mode_order(modes))} at step {step} of {name} from {path.name}: its "
                f"{count} images" + (f" in place of the run's own {fewer}" if fewer else "")
            )
    return saliency, frames, notes


def mode_order(modes) -> list[str]:
    """`modes` in envs.ALL_MODES order, then any other alphabetically."""
    return [m for m in envs.ALL_MODES if m in modes] + sorted(set(modes) - set(envs.ALL_MODES))


def read_run(folder: Path, name: str) -> tuple[Run | None, list[str]]:
    """The run in `folder`, or None; and one line for each thing of it that was left out."""
    try:
        args = json.loads((folder / "args.json").read_text())
        method, env_id, seed = str(args["exp_name"]), str(args["env_id"]), int(args["seed"])
    except (OSError, ValueError, TypeError, KeyError) as e:
        problem = f"no field {e}" if isinstance(e, KeyError) else f"{type(e).__name__}: {e}"
        return None, [f"skipped {name}: args.json unreadable ({problem})"]
    if not (folder / "evaluations.csv").exists():
        return None, [f"skipped {name}: no evaluations.csv yet"]
    episodes, frames, notes = read_evaluations(folder / "evaluations.csv", name)
    if episodes is None:
        return None, [f"skipped {name}: {notes[0]}"]
    # Evaluations of a saved checkpoint made after training (`--eval-checkpoint`, e.g. on modes
    # the run did not evaluate while training) fill the (mode, step) pairs the run's own lack.
    for path in sorted(p for p in folder.glob("eval_checkpoint_step*.csv") if not p.name.endswith("_saliency.csv")):
        extra, extra_frames, extra_notes = read_evaluations(path, name)
        if extra is None:
            notes.append(f"ignored {name}/{extra_notes[0]}")
            continue
        notes += extra_notes
        # Where both evaluated a mode at a step, the one with more episodes counts (the run's own on a
        # tie): a final checkpoint is typically evaluated with more episodes than the training-time checks.
        evaluated, offered = Counter(key[:2] for key in episodes), Counter(key[:2] for key in extra)  # (mode, step): episodes
        added = {pair for pair in offered if pair not in evaluated}
        replaced = {pair for pair in offered if offered[pair] > evaluated.get(pair, offered[pair])}
        episodes = {key: ret for key, ret in episodes.items() if key[:2] not in replaced}
        episodes |= {key: ret for key, ret in extra.items() if key[:2] in added | replaced}
        frames |= {step: extra_frames[step] for _, step in added | replaced}
        for step in sorted({step for _, step in added | replaced}):
            took = ", ".join(mode_order({m for m, s in added if s == step}))
            if took:
                notes.append(
                    f"took {took} at step {step} of {name} from {path.name} (its checkpoint, evaluated after training)"
                )
            by_counts = {}  # one line per pair of episode counts
            for mode, _ in (pair for pair in replaced if pair[1] == step):
                by_counts.setdefault((offered[mode, step], evaluated[mode, step]), set()).add(mode)
            for (more, fewer), modes in sorted(by_counts.items()):
                notes.append(
                    f"took {', '.join(mode_order(modes))} at step {step} of {name} from {path.name}: its {more} episodes "
                    f"in place of the run's own {fewer}"
                )
    if not episodes:
        return None, notes + [f"skipped {name}: no evaluations yet"]
    returns = {}
    for (mode, step, _), ret in sorted(episodes.items()):
        returns.setdefault(mode, {}).setdefault(step, []).append(ret)
    returns = {mode: {step: np.array(r) for step, r in by_step.items()} for mode, by_step in returns.items()}
    summary = None
    if (folder / "summary.json").exists():
        try:
            summary = json.loads((folder / "summary.json").read_text())
            if not isinstance(summary, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as e:
            summary = {"status": "summary.json unreadable"}
            notes.append(f"ignored {name}/summary.json ({type(e).__name__}: {e}): its status and wall time are n/a")
    total = args.get("total_timesteps")
    saliency, saliency_frames, saliency_notes = read_saliency(folder, name)
    return Run(
        name,
        method,
        env_id,
        seed,
        total if isinstance(total, int) else None,
        returns,
        saliency_frames | frames,
        summary,
        saliency,
    ), notes + saliency_notes


def load_runs(*runs_dirs: Path) -> tuple[list[Run], list[str]]:
    """Every run under the `runs_dirs`, one per method, task and seed; and what was left out, one
    line each. With several folders a run's name starts with its folder; a run folder reached
    from two of them (one inside the other) is read once."""
    runs, messages, seen = [], [], set()
    for runs_dir in runs_dirs:
        for args_path in sorted(runs_dir.rglob("args.json")):
            if args_path.resolve() in seen:
                continue
            seen.add(args_path.resolve())
            name = str(args_path.parent.relative_to(runs_dir))
            run, notes = read_run(args_path.parent, str(runs_dir / name) if len(runs_dirs) > 1 else name)
            messages += notes
            if run is not None:
                runs.append(run)
    # A sweep relaunched under new folder names leaves two folders for one seed: keep the furthest.
    kept = {}
    for run in sorted(runs, key=lambda r: (r.last_step(), r.name), reverse=True):
        key = (run.method, run.env_id, run.seed)
        if key in kept:
            messages.append(
                f"skipped {run.name}: same method, task and seed as {kept[key].name}, "
                "which is kept (evaluated as far or further)"
            )
        else:
            kept[key] = run
    return sorted(kept.values(), key=lambda r: (r.env_id, method_key(r.method), r.seed, r.name)), messages


def method_key(method: str) -> tuple[int, str]:
    """Sort key of a method: its place in METHOD_ORDER, any other after them, alphabetically."""
    return (METHOD_ORDER.index(method), "") if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def method_order(methods) -> list[str]:
    """`methods` in METHOD_ORDER, then any other alphabetically."""
    return sorted(set(methods), key=method_key)


def method_colors(methods) -> dict:
    """A matplotlib colour per method; the paper's methods keep theirs whichever of them ran, so that
    one method has one colour across reports."""
    return {m: f"C{i % 10}" for i, m in enumerate(method_order(set(methods) | set(METHOD_ORDER)))}


def ordered_modes(runs: list[Run]) -> list[str]:
    """Modes found, in envs.ALL_MODES order, then any other mode alphabetically."""
    return mode_order({mode for run in runs for mode in run.returns})


# ---------------------------------------------------------------------------------------------
# The reported step and the cells of the table
# ---------------------------------------------------------------------------------------------
def make_cells(runs: list[Run], step: int | None = None) -> tuple[dict, list[str]]:
    """{(env_id, method, mode): Cell} and one line for each run or cell left out, or reported early.

    A cell reports `step` if given (runs without an evaluation there are left out of it), else the
    last step that every run of its method, task and mode evaluated."""
    cells, messages = {}, []
    groups = itertools.groupby(runs, key=lambda r: (r.env_id, r.method))
    for (env_id, method), group in groups:
        group = list(group)
        missing = {}  # run name -> modes it lacks (at `step`)
        for mode in ordered_modes(group):
            have = [r for r in group if mode in r.returns]
            for r in group:
                if mode not in r.returns:
                    missing.setdefault(r.name, []).append(mode)
            if step is not None:
                used = [r for r in have if step in r.returns[mode]]
                for r in have:
                    if step not in r.returns[mode]:
                        missing.setdefault(r.name, []).append(mode)
                chosen = step
            else:
                common = set.intersection(*(set(r.returns[mode]) for r in have))
                if not common:
                    messages.append(
                        f"skipped {env_id} / {method} / {mode}: its {len(have)} runs share no "
                        "evaluated step (pass --step to choose one)"
                    )
                    continue
                used, chosen = have, max(common)
            if used:
                means = np.array([r.returns[mode][chosen].mean() for r in used])
                cells[env_id, method, mode] = Cell(chosen, used[0].frames[chosen], used, means)
        where = f"at step {step}" if step is not None else "at all"
        for name, modes in missing.items():
            messages.append(f"left out {name} from {', '.join(modes)}: not evaluated there {where}")
        if step is None:
            reported = min((c.step for (e, m, _), c in cells.items() if (e, m) == (env_id, method)), default=None)
            ahead = [r for r in group if reported is not None and r.last_step() > reported]
            if ahead:
                messages.append(
                    f"note: {env_id} / {method} is reported at step {reported}, the last one all its "
                    f"{len(group)} runs evaluated; {len(ahead)} went further (up to step "
                    f"{max(r.last_step() for r in ahead)}); pass --step to choose"
                )
    return cells, messages


# ---------------------------------------------------------------------------------------------
# Tables (markdown, aligned so that they also read on the console)
# ---------------------------------------------------------------------------------------------
def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header] + rows) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths]] + rows
    return "\n".join("| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths)) + " |" for line in lines)


def mean_std(values: np.ndarray) -> str:
    """'mean ± std (n)': the sample std over seeds (ddof=1); one seed has none."""
    if len(values) == 1:
        return f"{values[0]:.0f} (1)"
    return f"{values.mean():.0f} ± {values.std(ddof=1):.0f} ({len(values)})"


def duration(seconds) -> str:
    return "n/a" if seconds is None else f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def wall_time(run: Run):
    t = (run.summary or {}).get("wall_time_s")
    return float(t) if isinstance(t, (int, float)) else None


def frames_text(frames: int) -> str:
    return f"{frames / 1e6:g}M" if frames >= 1_000_000 else f"{frames / 1e3:g}k" if frames >= 1000 else str(frames)


def share_text(values: np.ndarray) -> str:
    """'mean ± std% (chance%)' of (mask_on_agent, agent_share) rows, one per seed (sample std, ddof=1)."""
    spread = f" ± {100 * values[:, 0].std(ddof=1):.0f}" if len(values) > 1 else ""
    return f"{100 * values[:, 0].mean():.0f}{spread}% ({100 * values[:, 1].mean():.0f}%)"


def saliency_table(runs: list[Run], step: int | None) -> list[str]:
    """Lines of table.md on where the critic's saliency mask lands: per method, task and mode, the
    share of the mask on the agent against the agent's share of the image (chance), mean ± std over
    the seeds, at `step` or at the last step every run of the method and task measured."""
    rows = []
    modes = mode_order({m for r in runs for m in r.saliency})
    for (env_id, method), group in itertools.groupby(runs, key=lambda r: (r.env_id, r.method)):
        group = [r for r in group if r.saliency]
        measured = set.intersection(*(set().union(*r.saliency.values()) for r in group)) if group else set()
        if step is not None:
            measured &= {step}
        if not measured:
            continue
        at = max(measured)
        cells = []
        for mode in modes:
            values = np.array([r.saliency[mode][at] for r in group if at in r.saliency.get(mode, {})])
            cells.append(share_text(values) if len(values) else "n/a")
        rows.append([method, env_id, str(len(group)), f"{at} ({frames_text(group[0].frames.get(at, 0))})"] + cells)
    if not rows:
        return []
    return [
        "## Where the saliency lands",
        "",
        "Share of the critic's saliency mask (guided backprop of Q1 at the policy's action, kept at rho, per",
        "stacked frame) that falls on the agent (the renderer's segmentation: what video_hard keeps), mean",
        "± std over seeds; in brackets the agent's share of the image, which a mask blind to the agent would get.",
        "",
        markdown_table(["method", "task", "runs", "step (frames)"] + modes, rows),
        "",
    ]


def results_tables(runs: list[Run], cells: dict, messages: list[str], step: int | None = None) -> str:
    """table.md: the paper's table, the per-method view with gap and wall time, the runs, what was left out."""
    tasks = sorted({e for e, _, _ in cells})
    methods = method_order(m for _, m, _ in cells)
    modes = [mode for mode in ordered_modes(runs) if any(k[2] == mode for k in cells)]
    columns = [(mode, m) for mode in modes for m in methods if any(k[1:] == (m, mode) for k in cells)]

    rows = [
        [task] + [mean_std(cells[task, m, mode].means) if (task, m, mode) in cells else "n/a" for mode, m in columns]
        for task in tasks
    ]
    average = ["**average**"]
    for mode, m in columns:
        task_means = [cells[t, m, mode].means.mean() for t in tasks if (t, m, mode) in cells]
        average.append(f"{np.mean(task_means):.0f} ({len(task_means)} task{'s' * (len(task_means) > 1)})")
    text = [
        "# Results",
        "",
        "Evaluation return per task: mean ± std over seeds of each seed's mean return over its evaluation",
        "episodes (number of seeds in brackets; std is the sample std, ddof=1). The average row is the",
        "mean over tasks of each cell's mean.",
        "",
        markdown_table(["task"] + [f"{m} {mode}" for mode, m in columns], rows + [average]),
        "",
    ]

    def reported_at(task, m):
        steps = {mode: cells[task, m, mode] for mode in modes if (task, m, mode) in cells}
        if len({c.step for c in steps.values()}) == 1:
            c = next(iter(steps.values()))
            return f"{c.step} ({frames_text(c.frames)} frames)"
        return ", ".join(f"{mode} {c.step}" for mode, c in steps.items())

    text += [
        "Reported at agent step (frames):",
        "",
        markdown_table(
            ["task"] + methods,
            [[t] + [reported_at(t, m) if any((t, m) == k[:2] for k in cells) else "n/a" for m in methods] for t in tasks],
        ),
        "",
    ]

    # Per method: every mode, the gap train - video_hard per seed, wall time per run.
    rows = []
    for m in methods:
        for task in tasks:
            if not any((task, m) == k[:2] for k in cells):
                continue
            group = [r for r in runs if (r.env_id, r.method) == (task, m)]
            row = [m, task, str(len(group))]
            row += [mean_std(cells[task, m, mode].means) if (task, m, mode) in cells else "n/a" for mode in modes]
            train, hard = cells.get((task, m, "train")), cells.get((task, m, "video_hard"))
            gap = "n/a"
            if train and hard:
                hard_means = dict(zip((r.name for r in hard.runs), hard.means))
                gaps = np.array([t - hard_means[r.name] for r, t in zip(train.runs, train.means) if r.name in hard_means])
                gap = mean_std(gaps) if len(gaps) else "n/a"
            # A run's cost is known once it finished: a stopped run's wall time is only part of it.
            times = [t for r in group if (r.summary or {}).get("status") == "finished" and (t := wall_time(r)) is not None]
            wall = (
                "n/a"
                if not times
                else duration(np.mean(times)) + (f" ({len(times)} of {len(group)} runs)" if len(times) < len(group) else "")
            )
            rows.append(row + [gap, wall])
    text += [
        "## Per method",
        "",
        "Each mode's return as above, the generalization gap (train - video_hard, per seed, then mean ± std",
        "over seeds) and the mean wall time of the finished runs (from summary.json; n/a if none finished).",
        "",
        markdown_table(["method", "task", "runs"] + modes + ["gap (train - video_hard)", "wall time per finished run"], rows),
        "",
    ]

    text += saliency_table(runs, step)

    rows = []
    for r in runs:
        status = (r.summary or {}).get("status", "no summary.json (running, or killed)")
        total = (r.summary or {}).get("total_timesteps", r.total_timesteps)
        rows.append(
            [r.name, r.method, r.env_id, str(r.seed), str(status), f"{r.last_step()} / {total}", duration(wall_time(r))]
        )
    text += [
        "## Runs",
        "",
        markdown_table(["run", "method", "task", "seed", "status", "last evaluated step / total", "wall time"], rows),
        "",
    ]
    text += ["## Left out and notes", ""] + ([f"- {line}" for line in messages] or ["- nothing"]) + [""]
    return "\n".join(text)


def every_evaluation_tables(runs: list[Run]) -> str:
    """evaluations.md: per task and mode, a row per evaluated step and a column per method: the
    return (mean ± std over seeds, seeds in brackets) and, where measured, the mask on the agent."""
    text = [
        "# Every evaluation",
        "",
        "Per task and mode, at every step some run evaluated it: the evaluation return, mean ± std over",
        "seeds of each seed's mean over its episodes (seeds in brackets), then the share of the critic's",
        "saliency mask on the agent, mean ± std over seeds (the agent's share of the image in brackets).",
        "A cell counts the runs that evaluated there.",
        "",
    ]
    for env_id in sorted({r.env_id for r in runs}):
        task_runs = [r for r in runs if r.env_id == env_id]
        methods = method_order(r.method for r in task_runs)
        for title, of_run, cell in (
            ("return", lambda r: r.returns, lambda r, mode, step: r.returns[mode][step].mean()),
            ("mask on the agent", lambda r: r.saliency, lambda r, mode, step: r.saliency[mode][step]),
        ):
            for mode in mode_order({m for r in task_runs for m in of_run(r)}):
                have = [m for m in methods if any(mode in of_run(r) for r in task_runs if r.method == m)]
                steps = sorted(set().union(*(of_run(r).get(mode, {}) for r in task_runs)))
                rows = []
                for step in steps:
                    frames = next(r.frames[step] for r in task_runs if step in r.frames)
                    row = [f"{step} ({frames_text(frames)})"]
                    for m in have:
                        group = [r for r in task_runs if r.method == m and step in of_run(r).get(mode, {})]
                        values = np.array([cell(r, mode, step) for r in group])
                        row.append("" if not group else mean_std(values) if title == "return" else share_text(values))
                    rows.append(row)
                text += [f"## {env_id}, {mode}: {title}", "", markdown_table(["step (frames)"] + have, rows), ""]
    return "\n".join(text)


# ---------------------------------------------------------------------------------------------
# Aggregates with stratified-bootstrap confidence intervals (rliable)
# ---------------------------------------------------------------------------------------------
def iqm_and_mean(*task_scores: np.ndarray) -> np.ndarray:
    """IQM over all runs of all tasks, and the mean of the per-task means; one (runs, 1) array per task.

    Tasks come as separate arrays so that tasks may have different numbers of seeds; rliable then
    resamples the runs of each task independently, which is the stratified bootstrap."""
    return np.array(
        [metrics.aggregate_iqm(np.concatenate(task_scores)), np.mean([metrics.aggregate_mean(s) for s in task_scores])]
    )


def probability_of_improvement(*task_scores: np.ndarray) -> np.ndarray:
    """P(X > Y) averaged over tasks; the first half of the arrays are X's tasks, the second Y's.

    Per task this is rliable's `metrics.probability_of_improvement` (the Mann-Whitney U statistic
    over n_x * n_y: pairs where X wins, ties counting half); computed here with numpy because
    rliable's call of scipy's `mannwhitneyu` costs ~1 ms a task, 90% of the report's time."""
    n = len(task_scores) // 2
    per_task = [np.mean((x > y.T) + 0.5 * (x == y.T)) for x, y in zip(task_scores[:n], task_scores[n:])]
    return np.array([np.mean(per_task)])


def interval(scores: list[np.ndarray], func, reps: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Point estimates and 95% CIs (shape (2, k)) of `func` by rliable's stratified bootstrap."""
    np.random.seed(seed)  # rliable resamples with numpy's global RNG (its random_state does not reach it)
    point, ci = rly.get_interval_estimates({"x": scores}, func, reps=reps)
    return point["x"], ci["x"]


def aggregate(cells: dict, reps: int, seed: int) -> tuple[dict, dict, list[str]]:
    """Per mode, over the tasks that every method ran: {mode: {method: (point, ci)}} of (IQM, mean) of
    return / 1000, {mode: {(x, y): (point, ci)}} of P(x > y), and one line per task left out."""
    methods = method_order(m for _, m, _ in cells)
    modes = [mode for mode in envs.MODES if any(k[2] == mode for k in cells)]
    modes += sorted({k[2] for k in cells} - set(modes))
    scores, pois, messages = {}, {}, []
    for mode in modes:
        tasks_of = {m: {e for e, mm, md in cells if (mm, md) == (m, mode)} for m in methods}
        ran = [m for m in methods if tasks_of[m]]
        tasks = sorted(set.intersection(*(tasks_of[m] for m in ran)))
        for task in sorted(set.union(*(tasks_of[m] for m in ran)) - set(tasks)):
            lacking = ", ".join(m for m in ran if task not in tasks_of[m])
            messages.append(f"left out {task} from the {mode} aggregates: no {lacking} runs there")
        if not tasks:
            continue
        per_task = {m: [cells[t, m, mode].means[:, None] / 1000 for t in tasks] for m in ran}
        scores[mode] = {m: interval(per_task[m], iqm_and_mean, reps, seed) + (len(tasks),) for m in ran}
        pois[mode] = {
            (x, y): interval(per_task[x] + per_task[y], probability_of_improvement, reps, seed)
            for x, y in itertools.combinations(ran, 2)
        }
    return scores, pois, messages


def aggregates_text(scores: dict, pois: dict, cells: dict, reps: int, seed: int) -> str:
    rows = []
    for mode, by_method in scores.items():
        for m, (point, ci, n_tasks) in by_method.items():
            n_runs = sum(len(c.means) for (e, mm, md), c in cells.items() if (mm, md) == (m, mode))
            rows.append(
                [mode, m, str(n_tasks), str(n_runs)] + [f"{point[i]:.3f} [{ci[0, i]:.3f}, {ci[1, i]:.3f}]" for i in range(2)]
            )
    text = [
        "# Aggregates",
        "",
        "Return / 1000 across tasks and seeds, at the steps of table.md, with 95% stratified-bootstrap",
        f"confidence intervals (rliable, {reps} resamples, seed {seed}). Per mode, only the tasks that every",
        "method ran count. IQM: mean of the middle 50% of all runs' scores; mean: mean over tasks of the",
        "per-task mean.",
        "",
        markdown_table(["mode", "method", "tasks", "runs", "IQM [95% CI]", "mean [95% CI]"], rows),
        "",
    ]
    rows = [
        [mode, f"P({x} > {y})", f"{point[0]:.2f} [{ci[0, 0]:.2f}, {ci[1, 0]:.2f}]"]
        for mode, by_pair in pois.items()
        for (x, y), (point, ci) in by_pair.items()
    ]
    if rows:
        text += [
            "## Probability of improvement",
            "",
            "P(X > Y): probability that a run of X scores higher than a run of Y on the same task (ties",
            "count half), averaged over tasks (Agarwal et al. 2021). P(Y > X) = 1 - P(X > Y).",
            "",
            markdown_table(["mode", "pair", "estimate [95% CI]"], rows),
            "",
        ]
    return "\n".join(text)


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------
def learning_curve(runs: list[Run], mode: str) -> tuple[np.ndarray, ...]:
    """Frames, mean over seeds and its 95% Student-t band at every step some run evaluated `mode`
    (a step with one seed has no band). The band is clipped to DMC's return range [0, 1000]: with
    2-3 seeds the t interval is wide enough to reach far outside what any policy can score."""
    steps = sorted(set().union(*(r.returns.get(mode, {}) for r in runs)))
    frames, mean, low, high = [], [], [], []
    for step in steps:
        seeds = np.array([r.returns[mode][step].mean() for r in runs if step in r.returns.get(mode, {})])
        half = scipy.stats.t.ppf(0.975, len(seeds) - 1) * seeds.std(ddof=1) / math.sqrt(len(seeds)) if len(seeds) > 1 else 0.0
        frames.append(next(r.frames[step] for r in runs if step in r.frames))
        mean.append(seeds.mean())
        low.append(max(seeds.mean() - half, RETURN_RANGE[0]))
        high.append(min(seeds.mean() + half, RETURN_RANGE[1]))
    return np.array(frames), np.array(mean), np.array(low), np.array(high)


def panel_grid(n: int, max_cols: int, width: float, height: float, **kwargs):
    cols = min(n, max_cols)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(width * cols, 8), height * rows + 0.4), squeeze=False, **kwargs)
    for ax in axes.flat[n:]:
        ax.axis("off")
    return fig, axes.flat[:n]


def plot_curves(runs: list[Run], colors: dict, out: Path) -> list[Path]:
    """One PNG per task: a panel per mode, a line per method with its 95% band over seeds."""
    paths = []
    for env_id in sorted({r.env_id for r in runs}):
        task_runs = [r for r in runs if r.env_id == env_id]
        modes = ordered_modes(task_runs)
        methods = method_order(r.method for r in task_runs)
        labels = {}
        for m in methods:  # "drq (5 seeds)", or "drq (3-5 seeds)" where modes were evaluated by fewer runs
            seeds = sorted({sum(md in r.returns for r in task_runs if r.method == m) for md in modes} - {0})
            labels[m] = (
                f"{m} ({seeds[0]}-{seeds[-1]} seeds)" if len(seeds) > 1 else f"{m} ({seeds[0]} seed{'s' * (seeds[0] > 1)})"
            )
        fig, axes = panel_grid(len(modes), 3, 4.6, 3.4)
        for ax, mode in zip(axes, modes):
            for m in methods:
                group = [r for r in task_runs if r.method == m]
                if not any(mode in r.returns for r in group):
                    continue
                frames, mean, low, high = learning_curve(group, mode)
                ax.plot(frames, mean, color=colors[m], marker="o", markersize=3, label=labels[m])
                ax.fill_between(frames, low, high, color=colors[m], alpha=0.2, linewidth=0)
                if len(frames) == 1:  # a band needs two steps: show the interval as a bar
                    ax.errorbar(frames, mean, yerr=[mean - low, high - mean], color=colors[m], capsize=4)
            ax.set_title(mode)
            ax.set_xlabel("frames")
            ax.set_ylabel("evaluation return")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: frames_text(x) if x > 0 else "0"))
            ax.grid(alpha=0.3)
        handles = {label: h for ax in axes for h, label in zip(*ax.get_legend_handles_labels())}
        fig.suptitle(f"{env_id}: evaluation return, mean over seeds with 95% confidence band")
        if len(fig.axes) > len(modes):  # an empty panel: the legend goes there
            fig.axes[-1].legend(handles.values(), handles.keys(), loc="center", frameon=False, fontsize="large")
            fig.tight_layout()
        else:
            fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles), frameon=False)
            fig.tight_layout(rect=(0, 0.4 / fig.get_figheight(), 1, 1))
        paths.append(out / f"curves_{env_id}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def plot_saliency(runs: list[Run], colors: dict, out: Path) -> list[Path]:
    """One PNG per task with saliency measurements: a panel per mode, a line per method (share of
    the mask on the agent, mean over seeds) and, dashed, the agent's share of the image (chance)."""
    paths = []
    for env_id in sorted({r.env_id for r in runs if r.saliency}):
        task_runs = [r for r in runs if r.env_id == env_id and r.saliency]
        modes = [m for m in envs.ALL_MODES if any(m in r.saliency for r in task_runs)]
        modes += sorted({m for r in task_runs for m in r.saliency} - set(modes))
        fig, axes = panel_grid(len(modes), 3, 4.6, 3.4)
        for ax, mode in zip(axes, modes):
            chance = {}
            for m in method_order(r.method for r in task_runs):
                group = [r for r in task_runs if r.method == m and mode in r.saliency]
                steps = sorted(set().union(*(r.saliency[mode] for r in group)))
                if not steps:
                    continue
                frames = [next(r.frames[s] for r in group if s in r.frames) for s in steps]
                values = [np.mean([r.saliency[mode][s][0] for r in group if s in r.saliency[mode]]) for s in steps]
                ax.plot(frames, values, color=colors[m], marker="o", markersize=3, label=f"{m} ({len(group)} seeds)")
                for s, f in zip(steps, frames):
                    chance.setdefault(f, []).extend(r.saliency[mode][s][1] for r in group if s in r.saliency[mode])
            xs = sorted(chance)
            ax.plot(xs, [np.mean(chance[x]) for x in xs], color="grey", linestyle="--", label="agent's share of the image")
            ax.set_title(mode)
            ax.set_xlabel("frames")
            ax.set_ylabel("mask on the agent")
            ax.set_ylim(0, 1)
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: frames_text(x) if x > 0 else "0"))
            ax.grid(alpha=0.3)
        handles = {label: h for ax in axes for h, label in zip(*ax.get_legend_handles_labels())}
        fig.suptitle(f"{env_id}: share of the critic's saliency mask on the agent")
        fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=len(handles), frameon=False)
        fig.tight_layout(rect=(0, 0.4 / fig.get_figheight(), 1, 1))
        paths.append(out / f"saliency_{env_id}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths


def plot_aggregates(scores: dict, colors: dict, out: Path) -> Path:
    """IQM of return / 1000 per mode (one panel each) and method, with 95% CI bars."""
    methods = method_order(m for by_method in scores.values() for m in by_method)
    # One x range for all modes, so that the drop from train to the distracting modes reads at a glance.
    fig, axes = panel_grid(len(scores), 5, 3.2, 0.5 * len(methods) + 1.5, sharex=True, sharey=True)
    for ax, (mode, by_method) in zip(axes, scores.items()):
        for i, m in enumerate(methods):
            if m in by_method:
                point, ci, _ = by_method[m]
                ax.errorbar(
                    point[0],
                    i,
                    xerr=[[point[0] - ci[0, 0]], [ci[1, 0] - point[0]]],
                    fmt="o",
                    color=colors[m],
                    capsize=4,
                    markersize=6,
                    linewidth=2,
                )
        ax.set_yticks(range(len(methods)), methods)
        ax.set_ylim(len(methods) - 0.4, -0.6)  # first method on top
        ax.set_title(mode)
        ax.set_xlabel("IQM of return / 1000")
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle("Aggregate IQM across tasks and seeds, 95% stratified-bootstrap CI")
    fig.tight_layout()
    path = out / "aggregate_iqm.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
def main(args: Args) -> None:
    runs_dirs, out = [Path(d) for d in args.runs_dirs], Path(args.out)
    if not runs_dirs:
        raise envs.ConfigError("no RUNS_DIR given: name the folder that holds the run folders")
    for runs_dir in runs_dirs:
        if not runs_dir.is_dir():
            raise envs.ConfigError(f"RUNS_DIR {runs_dir} is not a folder")
    if args.reps < 1:
        raise envs.ConfigError(f"--reps {args.reps}: give at least 1 bootstrap resample")
    if args.step is not None and args.step < 0:
        raise envs.ConfigError(f"--step {args.step}: give an agent step >= 0")
    if out.exists() and not out.is_dir():
        raise envs.ConfigError(f"--out {args.out} is a file, not a folder")
    runs, messages = load_runs(*runs_dirs)
    where = ", ".join(map(str, runs_dirs))
    if not runs and not messages:
        raise envs.ConfigError(
            f"no runs under {where} (no args.json found): point RUNS_DIR at the folder that holds the run folders"
        )
    cells, cell_messages = make_cells(runs, args.step)
    messages += cell_messages
    for line in messages:
        print(line)
    if not cells:
        at = f" at step {args.step}" if args.step is not None else ""
        raise envs.ConfigError(f"nothing to report under {where}{at}: every run was left out (see above)")

    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    scores, pois, aggregate_messages = aggregate(cells, args.reps, args.seed)
    for line in aggregate_messages:
        print(line)
    table = results_tables(runs, cells, messages + aggregate_messages, args.step)
    aggregates = aggregates_text(scores, pois, cells, args.reps, args.seed)
    (out / "table.md").write_text(table)
    (out / "aggregates.md").write_text(aggregates)
    (out / "evaluations.md").write_text(every_evaluation_tables(runs))
    print("\n" + table + "\n" + aggregates)

    colors = method_colors(r.method for r in runs)
    plots = (
        plot_curves(runs, colors, out)
        + plot_saliency(runs, colors, out)
        + ([plot_aggregates(scores, colors, out)] if scores else [])
    )
    print(
        f"wrote {out / 'table.md'}, {out / 'aggregates.md'}, {out / 'evaluations.md'} and {len(plots)} plots "
        f"({', '.join(p.name for p in plots)}) in {time.time() - start:.0f} s"
    )


if __name__ == "__main__":
    try:
        main(tyro.cli(Args, description=__doc__))
    except envs.ConfigError as e:
        sys.exit(f"error: {e}")
