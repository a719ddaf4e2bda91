"""experiments/report.py on synthetic runs folders written here, with returns drawn from known
distributions: the table's numbers against the written data, the reported step, the intervals
against the true values, what is left out and why, the plots, and the CLI in a subprocess."""

import csv
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.stats
from common import ROOT
from PIL import Image

sys.path.insert(0, os.path.join(ROOT, "experiments"))
import report  # noqa: E402

MODES = ("train", "color_easy", "color_hard", "video_easy", "video_hard")
ACTION_REPEAT = {"cartpole-swingup": 8, "walker-walk": 4}


def write_run(root, name, method, env_id, seed, rows, summary=None, algorithm="sac_baseline"):
    """A run folder as the scripts write it; rows are (step, mode, episode, return)."""
    folder = root / name
    folder.mkdir(parents=True)
    args = {
        "exp_name": method,
        "env_id": env_id,
        "seed": seed,
        "algorithm": algorithm,
        "total_timesteps": 3000,
        "action_repeat": None,
        "eval_episodes": 4,
        "augmentation": "shift",
    }
    (folder / "args.json").write_text(json.dumps(args))
    with open(folder / "evaluations.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "frames", "mode", "episode", "return"])
        for step, mode, episode, ret in rows:
            writer.writerow([step, step * ACTION_REPEAT.get(env_id, 4), mode, episode, ret])
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def level(method, env_id, mode):
    """True mean return at the last step: sgqn above drq, harder modes lower."""
    base = {"cartpole-swingup": 600, "walker-walk": 400}[env_id] + {"drq": 0, "sgqn": 150}[method]
    return base * (1 - 0.1 * MODES.index(mode) * (1 if method == "drq" else 0.5))


def eval_rows(rng, method, env_id, steps, modes=MODES, episodes=4):
    seed_offset = rng.normal(0, 40)
    return [
        (step, mode, ep, round(float(step / 3000 * (level(method, env_id, mode) + seed_offset) + rng.normal(0, 25)), 3))
        for step in steps
        for mode in modes
        for ep in range(episodes)
    ]


def finished(wall_time_s):
    return {
        "status": "finished",
        "step": 3000,
        "total_timesteps": 3000,
        "wall_time_s": wall_time_s,
        "last_evaluation": {},
        "checkpoint": "checkpoint.pt",
        "algorithm": "sac_baseline",
    }


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """drq: 3 seeds on cartpole, 2 on walker; sgqn: 3 and 3, walker's seed 3 still going (step 2000).
    Plus one of each thing a partial sweep holds: runs without evaluations, malformed files, a duplicate,
    a run evaluated on train only, a half-written last line."""
    root = tmp_path_factory.mktemp("runs")
    rng = np.random.default_rng(0)
    steps = [0, 1000, 2000, 3000]
    for method, env_id, seeds in [
        ("drq", "cartpole-swingup", 3),
        ("drq", "walker-walk", 2),
        ("sgqn", "cartpole-swingup", 3),
        ("sgqn", "walker-walk", 3),
    ]:
        for seed in range(1, seeds + 1):
            going = (method, env_id, seed) == ("sgqn", "walker-walk", 3)
            write_run(
                root / "sweep",
                f"{env_id}__{method}__{seed}",
                method,
                env_id,
                seed,
                eval_rows(rng, method, env_id, steps[:3] if going else steps),
                None if going else finished(3600.0 * seed),
                algorithm="sgqn" if method == "sgqn" else "sac_baseline",
            )
    # Half-written last line (killed during a write): the line is ignored, the run is kept.
    with open(root / "sweep" / "cartpole-swingup__drq__1" / "evaluations.csv", "ab") as f:
        f.write(b"4000,32000,tra\x00\x00\x00")
    # An evaluation repeated after a resume from an earlier checkpoint: the later rows count.
    with open(root / "sweep" / "cartpole-swingup__sgqn__2" / "evaluations.csv", "a") as f:
        f.writelines(f"3000,24000,{mode},{ep},{900 + ep}\n" for mode in MODES for ep in range(4))
    # A second folder for drq cartpole seed 2 from an earlier launch, evaluated less far: dropped.
    write_run(
        root / "old",
        "cartpole-swingup__drq__2__1700000000",
        "drq",
        "cartpole-swingup",
        2,
        eval_rows(rng, "drq", "cartpole-swingup", steps[:2]),
    )
    # A run evaluated on train only: left out of the other modes' columns.
    write_run(
        root / "sweep",
        "walker-walk__drq__3",
        "drq",
        "walker-walk",
        3,
        eval_rows(rng, "drq", "walker-walk", steps, modes=("train",)),
        summary=finished(1800.0),
    )
    # Runs that have nothing to report yet, or whose files are broken.
    write_run(root / "sweep", "just-started", "drq", "walker-walk", 9, [])
    (write_run(root / "sweep", "no-csv", "drq", "walker-walk", 8, []) / "evaluations.csv").unlink()
    (write_run(root / "sweep", "bad-args", "drq", "walker-walk", 7, []) / "args.json").write_text("{not json")
    bad_header = write_run(root / "sweep", "bad-header", "drq", "walker-walk", 6, [])
    (bad_header / "evaluations.csv").write_text("step,mode,return\n0,train,1.0\n")
    (root / "sweep" / "cartpole-swingup__sgqn__1" / "summary.json").write_text("{truncated")
    return root


def cell_means(root, name, mode, step):
    """Mean return of one run's evaluation at `step`, read straight from its csv (last row of each episode)."""
    with open(root / name / "evaluations.csv") as f:
        episodes = {r["episode"]: float(r["return"]) for r in csv.DictReader(f) if (r["mode"], r["step"]) == (mode, str(step))}
    return np.mean(list(episodes.values()))


def test_cells_hold_each_seeds_mean_at_the_last_common_step(sweep):
    runs, messages = report.load_runs(sweep)
    cells, cell_messages = report.make_cells(runs)
    assert sorted({(r.method, r.env_id) for r in runs}) == [
        ("drq", "cartpole-swingup"),
        ("drq", "walker-walk"),
        ("sgqn", "cartpole-swingup"),
        ("sgqn", "walker-walk"),
    ]
    assert len(runs) == 12
    for env_id, method, seeds, step in [
        ("cartpole-swingup", "drq", 3, 3000),
        ("walker-walk", "drq", 2, 3000),
        ("cartpole-swingup", "sgqn", 3, 3000),
        ("walker-walk", "sgqn", 3, 2000),
    ]:
        for mode in MODES:
            seeds_here = 3 if (env_id, method, mode) == ("walker-walk", "drq", "train") else seeds  # + train-only run
            cell = cells[env_id, method, mode]
            assert cell.step == step and cell.frames == step * ACTION_REPEAT[env_id]
            expected = [cell_means(sweep / "sweep", f"{env_id}__{method}__{s}", mode, step) for s in range(1, seeds_here + 1)]
            assert [r.seed for r in cell.runs] == list(range(1, seeds_here + 1))
            np.testing.assert_allclose(cell.means, expected, rtol=1e-12)
    assert cells["cartpole-swingup", "sgqn", "video_hard"].means[1] == 901.5  # the repeated evaluation
    # sgqn walker is reported at 2000 because seed 3 is still going; the table says so.
    assert any(
        m.startswith("note: walker-walk / sgqn is reported at step 2000") and "2 went further (up to step 3000)" in m
        for m in cell_messages
    )


def test_table_cells_average_row_and_seed_counts(sweep, tmp_path):
    runs, messages = report.load_runs(sweep)
    cells, cell_messages = report.make_cells(runs)
    table = report.results_tables(runs, cells, messages + cell_messages)
    lines = table.splitlines()
    header = [c.strip() for c in next(line for line in lines if line.startswith("| task ")).strip("|").split("|")]
    assert header == ["task"] + [f"{m} {mode}" for mode in MODES for m in ("sgqn", "drq")]  # the paper's order, DrQ beside

    def row(*first):  # the cells of the first table row that starts with these cells
        rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("|")]
        return next(r for r in rows if r[: len(first)] == list(first))

    for task in ("cartpole-swingup", "walker-walk"):
        for i, (mode, method) in enumerate([(mode, m) for mode in MODES for m in ("sgqn", "drq")]):
            means = cells[task, method, mode].means
            assert row(task)[1 + i] == f"{means.mean():.0f} ± {np.std(means, ddof=1):.0f} ({len(means)})"
    drq_column = {mode: 2 + 2 * MODES.index(mode) for mode in MODES}  # after the task and sgqn's column of the mode
    assert row("cartpole-swingup")[drq_column["video_hard"]].endswith("(3)")
    assert row("walker-walk")[drq_column["train"]].endswith("(3)") and row("walker-walk")[drq_column["video_hard"]].endswith(
        "(2)"
    )
    average = row("**average**")
    drq_train = np.mean([cells[t, "drq", "train"].means.mean() for t in ("cartpole-swingup", "walker-walk")])
    assert average[drq_column["train"]] == f"{drq_train:.0f} (2 tasks)"
    # Per method: gap = train - video_hard per seed, then mean ± std; wall time per run from summary.json.
    per_method = row("sgqn", "cartpole-swingup")
    train, hard = cells["cartpole-swingup", "sgqn", "train"], cells["cartpole-swingup", "sgqn", "video_hard"]
    gaps = train.means - hard.means
    assert per_method[-2] == f"{gaps.mean():.0f} ± {gaps.std(ddof=1):.0f} (3)"
    assert per_method[-1] == "2.5 h (2 of 3 runs)"  # seeds 2 and 3: 2 h and 3 h; seed 1's summary is broken
    assert row("sweep/cartpole-swingup__sgqn__1")[4:7] == ["summary.json unreadable", "3000 / 3000", "n/a"]
    assert row("drq", "walker-walk")[-1] == "1.2 h"  # 1 h, 2 h and the train-only run's 0.5 h
    assert row("sgqn", "walker-walk")[-1] == "1.5 h (2 of 3 runs)"
    assert row("sweep/walker-walk__sgqn__3")[4:7] == ["no summary.json (running, or killed)", "2000 / 3000", "n/a"]
    assert row("sweep/walker-walk__sgqn__2")[4:7] == ["finished", "3000 / 3000", "2.0 h"]
    assert "2000 (8k frames)" in table and "3000 (24k frames)" in table


def test_left_out_runs_and_files_are_named_with_the_reason(sweep):
    runs, messages = report.load_runs(sweep)
    messages += report.make_cells(runs)[1]
    expected = [
        "skipped sweep/just-started: no evaluations yet",
        "skipped sweep/no-csv: no evaluations.csv yet",
        "skipped sweep/bad-args: args.json unreadable (JSONDecodeError: ",
        "skipped sweep/bad-header: evaluations.csv starts with 'step,mode,return', expected 'step,frames,mode,episode,return'",
        "skipped old/cartpole-swingup__drq__2__1700000000: same method, task and seed as sweep/cartpole-swingup__drq__2",
        "ignored 1 malformed line(s) of sweep/cartpole-swingup__drq__1/evaluations.csv (line 82)",
        "ignored sweep/cartpole-swingup__sgqn__1/summary.json (JSONDecodeError: ",
        "left out sweep/walker-walk__drq__3 from color_easy, color_hard, video_easy, video_hard: not evaluated there at all",
    ]
    for start in expected:
        assert sum(m.startswith(start) for m in messages) == 1, start
    assert len(messages) == len(expected) + 1  # and the note on sgqn walker's step


def test_step_flag_reports_that_step_and_leaves_out_runs_without_it(sweep):
    runs, _ = report.load_runs(sweep)
    cells, messages = report.make_cells(runs, step=3000)
    assert cells["walker-walk", "sgqn", "train"].step == 3000
    assert [r.seed for r in cells["walker-walk", "sgqn", "train"].runs] == [1, 2]
    assert f"left out sweep/walker-walk__sgqn__3 from {', '.join(MODES)}: not evaluated there at step 3000" in messages
    cells, _ = report.make_cells(runs, step=1000)
    assert {c.step for c in cells.values()} == {1000} and len(cells["walker-walk", "sgqn", "train"].means) == 3


def test_checkpoint_evaluations_fill_the_modes_a_run_did_not_evaluate(tmp_path):
    """A run evaluated on train, color_easy and video_hard only while training (4 episodes), whose final
    checkpoint was evaluated on every mode afterwards (`--eval-checkpoint` writes eval_checkpoint_step{N}.csv
    beside it): the report takes the modes it lacks at that step from there, and where it has both,
    the evaluation with more episodes: the checkpoint's 10 episodes of train and color_easy (one note
    for both), but its own 4 of video_hard, which the checkpoint also evaluated with 4 only."""
    rng = np.random.default_rng(3)
    steps = [1000, 2000, 3000]
    own = eval_rows(rng, "drq", "cartpole-swingup", steps, modes=("train", "color_easy", "video_hard"))
    trained = write_run(tmp_path, "a", "drq", "cartpole-swingup", 1, own)
    write_run(tmp_path, "b", "drq", "cartpole-swingup", 2, eval_rows(rng, "drq", "cartpole-swingup", steps))
    later = {mode: [100.0 * i + ep for ep in range(10 if mode != "video_hard" else 4)] for i, mode in enumerate(MODES)}
    with open(trained / "eval_checkpoint_step3000.csv", "w") as f:
        f.write("step,frames,mode,episode,return\n")
        f.writelines(f"3000,24000,{mode},{ep},{ret}\n" for mode in MODES for ep, ret in enumerate(later[mode]))
    (trained / "eval_checkpoint_step2000.csv").write_text("mode,return\ntrain,1.0\n")
    runs, messages = report.load_runs(tmp_path)
    run = runs[0]
    assert sorted(run.returns) == sorted(MODES) and run.frames[3000] == 24000
    for mode in ("color_hard", "video_easy"):
        assert set(run.returns[mode]) == {3000}
        np.testing.assert_array_equal(run.returns[mode][3000], later[mode])
    for mode in ("train", "color_easy"):  # 10 episodes against 4
        np.testing.assert_array_equal(run.returns[mode][3000], later[mode])
    own_hard = [ret for step, mode, _, ret in own if (step, mode) == (3000, "video_hard")]
    np.testing.assert_array_equal(run.returns["video_hard"][3000], own_hard)  # 4 against 4: its own
    assert run.returns["train"][2000].tolist() == [ret for step, mode, _, ret in own if (step, mode) == (2000, "train")]
    assert messages == [
        "ignored a/eval_checkpoint_step2000.csv starts with 'mode,return', expected 'step,frames,mode,episode,return'",
        "took color_hard, video_easy at step 3000 of a from eval_checkpoint_step3000.csv (its checkpoint, evaluated after training)",
        "took train, color_easy at step 3000 of a from eval_checkpoint_step3000.csv: its 10 episodes in place of the run's own 4",
    ]
    cells, _ = report.make_cells(runs)
    for mode in MODES:
        assert cells["cartpole-swingup", "drq", mode].step == 3000
        assert cells["cartpole-swingup", "drq", mode].means[0] == np.mean(run.returns[mode][3000])
    assert cells["cartpole-swingup", "drq", "train"].means[0] == np.mean(later["train"])


def test_several_runs_dirs_are_read_as_one(tmp_path):
    """Sweeps made on two machines: the runs of both folders count together, their names start
    with their folder, a seed run in both is counted once (the furthest), and a folder given
    twice (or inside another) adds nothing."""
    rng = np.random.default_rng(4)
    a, b = tmp_path / "machine_a", tmp_path / "machine_b"
    for seed in (1, 2):
        write_run(
            a,
            f"cartpole-swingup__drq__{seed}",
            "drq",
            "cartpole-swingup",
            seed,
            eval_rows(rng, "drq", "cartpole-swingup", [0, 1000, 2000]),
        )
    write_run(
        b, "cartpole-swingup__drq__3", "drq", "cartpole-swingup", 3, eval_rows(rng, "drq", "cartpole-swingup", [0, 1000, 2000])
    )
    write_run(
        b,
        "cartpole-swingup__sgqn__1",
        "sgqn",
        "cartpole-swingup",
        1,
        eval_rows(rng, "sgqn", "cartpole-swingup", [0, 1000, 2000]),
    )
    write_run(b, "again__drq__1", "drq", "cartpole-swingup", 1, eval_rows(rng, "drq", "cartpole-swingup", [0, 1000]))
    runs, messages = report.load_runs(a, b, a, a / "cartpole-swingup__drq__2")
    assert [(r.method, r.seed, r.name) for r in runs] == [
        ("sgqn", 1, f"{b}/cartpole-swingup__sgqn__1"),
        ("drq", 1, f"{a}/cartpole-swingup__drq__1"),
        ("drq", 2, f"{a}/cartpole-swingup__drq__2"),
        ("drq", 3, f"{b}/cartpole-swingup__drq__3"),
    ]
    assert messages == [
        f"skipped {b}/again__drq__1: same method, task and seed as {a}/cartpole-swingup__drq__1, "
        "which is kept (evaluated as far or further)"
    ]
    cells, _ = report.make_cells(runs)
    assert len(cells["cartpole-swingup", "drq", "train"].means) == 3
    out = tmp_path / "report"
    report.main(report.Args(runs_dirs=[str(a), str(b)], out=str(out), reps=50))
    assert "| cartpole-swingup | " in (out / "table.md").read_text()
    assert " (3) " in (out / "table.md").read_text() and " (1) " in (out / "table.md").read_text()
    with pytest.raises(report.envs.ConfigError, match=f"RUNS_DIR {tmp_path}/missing is not a folder"):
        report.main(report.Args(runs_dirs=[str(a), str(tmp_path / "missing")], out=str(tmp_path / "out2")))
    with pytest.raises(report.envs.ConfigError, match="no RUNS_DIR given"):
        report.main(report.Args(runs_dirs=[], out=str(tmp_path / "out2")))
    assert not (tmp_path / "out2").exists()


def true_sweep(root, rng, seeds=10, shift=100.0):
    """3 tasks x 2 methods x `seeds` seeds, train only, one evaluation of 5 episodes; a seed's mean
    return ~ N(mu_task (+ shift for sgqn), 60^2 + 20^2/5). Per method the pooled scores are symmetric
    about the mean of the mus, so the true IQM and mean of return/1000 are both that."""
    mus = {"cartpole-swingup": 300.0, "walker-walk": 500.0, "finger-spin": 700.0}
    for env_id, mu in mus.items():
        for method, m in (("drq", mu), ("sgqn", mu + shift)):
            for seed in range(seeds):
                offset = rng.normal(0, 60)
                write_run(
                    root,
                    f"{env_id}__{method}__{seed}",
                    method,
                    env_id,
                    seed,
                    [(1000, "train", ep, m + offset + rng.normal(0, 20)) for ep in range(5)],
                )
    sd = math.sqrt(60**2 + 20**2 / 5)
    return 0.5, 0.5 + shift / 1000, scipy.stats.norm.cdf(shift / (sd * math.sqrt(2)))  # P(sgqn > drq)


def test_intervals_contain_the_true_values_and_match_the_estimators(tmp_path):
    true_drq, true_sgqn, true_poi = true_sweep(tmp_path, np.random.default_rng(1))
    runs, _ = report.load_runs(tmp_path)
    cells, _ = report.make_cells(runs)
    scores, pois, messages = report.aggregate(cells, reps=500, seed=0)
    assert messages == [] and list(scores) == ["train"]
    for method, truth in (("drq", true_drq), ("sgqn", true_sgqn)):
        point, ci, n_tasks = scores["train"][method]
        assert n_tasks == 3
        per_task = [cells[t, method, "train"].means / 1000 for t in ("cartpole-swingup", "finger-spin", "walker-walk")]
        np.testing.assert_allclose(
            point, [scipy.stats.trim_mean(np.concatenate(per_task), 0.25), np.mean([s.mean() for s in per_task])]
        )
        for i in range(2):  # IQM, mean: the CI holds the point and the truth, and is not vacuous
            assert ci[0, i] <= point[i] <= ci[1, i]
            assert ci[0, i] <= truth <= ci[1, i] and ci[1, i] - ci[0, i] < 0.1
    assert list(pois["train"]) == [("sgqn", "drq")]  # pairs in the paper's order
    point, ci = pois["train"]["sgqn", "drq"]
    x = [cells[t, "sgqn", "train"].means for t in ("cartpole-swingup", "finger-spin", "walker-walk")]
    y = [cells[t, "drq", "train"].means for t in ("cartpole-swingup", "finger-spin", "walker-walk")]
    pairs = [np.mean((a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :])) for a, b in zip(x, y)]
    assert point[0] == pytest.approx(np.mean(pairs))
    assert ci[0, 0] <= true_poi <= ci[1, 0] and ci[0, 0] > 0.5


def test_probability_of_improvement_is_rliables_statistic():
    from rliable import metrics

    rng = np.random.default_rng(3)
    x = [rng.integers(0, 5, size=(n, 1)).astype(float) for n in (3, 5, 4)]  # small integers: many ties
    y = [rng.integers(0, 5, size=(n, 1)).astype(float) for n in (4, 2, 4)] + [x[0]]  # and identical arrays
    x.append(x[0])
    expected = np.mean([metrics.probability_of_improvement(a, b) for a, b in zip(x, y)])
    assert report.probability_of_improvement(*x, *y)[0] == pytest.approx(expected, abs=1e-12)


def test_interval_coverage_is_near_95_percent():
    """Over 30 independent synthetic sweeps, the 95% CI of the mean holds the true mean about 95% of the time."""
    rng = np.random.default_rng(2)
    hits = 0
    for _ in range(30):
        per_task = [rng.normal(mu, 0.06, size=(8, 1)) for mu in (0.3, 0.5, 0.7)]
        _, ci = report.interval(per_task, report.iqm_and_mean, reps=200, seed=0)
        hits += ci[0, 1] <= 0.5 <= ci[1, 1]
    assert hits >= 25  # expected ~27-28 (percentile bootstrap with 8 seeds a task runs a bit narrow)


def test_curve_band_is_the_t_interval_clipped_to_the_return_range(tmp_path):
    """Three close seeds: the Student-t interval itself. Two far-apart seeds: the interval reaches
    past 0 and 1000, and is cut there. One seed: no band."""
    returns = {1: (500, 100, 50), 2: (520, 900, 150), 3: (540, None, 100)}  # seed: returns at steps 1000, 2000, 3000
    for seed, values in returns.items():
        rows = [
            (step, "train", ep, value)
            for step, value in zip((1000, 2000, 3000), values)
            if value is not None
            for ep in range(2)
        ]
        write_run(tmp_path, f"cartpole-swingup__drq__{seed}", "drq", "cartpole-swingup", seed, rows)
    runs, _ = report.load_runs(tmp_path)
    frames, mean, low, high = report.learning_curve(runs, "train")
    assert frames.tolist() == [8000, 16000, 24000] and mean.tolist() == pytest.approx([520, 500, 100])
    half = scipy.stats.t.ppf(0.975, 2) * 20 / math.sqrt(3)
    assert (low[0], high[0]) == pytest.approx((520 - half, 520 + half))
    assert (low[1], high[1]) == (0.0, 1000.0)  # 500 +- 12.7 * 400 / sqrt(2)
    assert low[2] == 0.0 and high[2] == pytest.approx(100 + scipy.stats.t.ppf(0.975, 2) * 50 / math.sqrt(3))  # cut at 0 only


def test_wall_time_per_run_counts_finished_runs_only(tmp_path):
    """A stopped run's wall time is part of its cost: averaging it in would understate a run's cost."""
    rows = [(3000, mode, ep, 500.0) for mode in MODES for ep in range(2)]
    write_run(tmp_path, "cartpole-swingup__drq__1", "drq", "cartpole-swingup", 1, rows, finished(3 * 3600.0))
    write_run(
        tmp_path,
        "cartpole-swingup__drq__2",
        "drq",
        "cartpole-swingup",
        2,
        rows,
        {**finished(600.0), "status": "interrupted", "step": 3000},
    )
    runs, messages = report.load_runs(tmp_path)
    cells, more = report.make_cells(runs)
    table = report.results_tables(runs, cells, messages + more)
    per_method = next(line for line in table.splitlines() if line.startswith("| drq "))
    assert per_method.rstrip(" |").endswith("3.0 h (1 of 2 runs)")


def test_every_evaluation_table_holds_each_step_of_each_method(sweep):
    """evaluations.md: per task and mode, a row per evaluated step, a column per method, each cell
    mean ± std over the seeds that evaluated there, from their CSVs; no saliency section without saliency files."""
    runs, _ = report.load_runs(sweep)
    text = report.every_evaluation_tables(runs)
    section = text.split("## walker-walk, video_hard: return")[1].split("##")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("|")]
    assert rows[0] == ["step (frames)", "sgqn", "drq"]
    assert [r[0] for r in rows[2:]] == ["0 (0)", "1000 (4k)", "2000 (8k)", "3000 (12k)"]  # walker: action repeat 4
    for row, step in zip(rows[2:], [0, 1000, 2000, 3000]):
        for cell, method in zip(row[1:], ["sgqn", "drq"]):
            seeds = [1, 2] if method == "drq" or step == 3000 else [1, 2, 3]  # sgqn walker seed 3 stopped at 2000
            means = np.array(
                [cell_means(sweep / "sweep", f"walker-walk__{method}__{seed}", "video_hard", step) for seed in seeds]
            )
            assert cell == f"{means.mean():.0f} ± {means.std(ddof=1):.0f} ({len(seeds)})", (step, method)
    train = text.split("## walker-walk, train: return")[1].split("##")[0]
    last = [[c.strip() for c in line.strip("|").split("|")] for line in train.splitlines() if line.startswith("| 3000")]
    assert last[0][2].endswith("(3)")  # drq walker seed 3 evaluated train only (drq's column after sgqn's)
    assert text.count(": return\n") == 2 * len(MODES) and "mask on the agent" not in text.split("A cell counts")[1]


def test_cli_writes_table_aggregates_and_readable_plots(sweep, tmp_path):
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "report.py"), str(sweep), "--out", str(out), "--reps", "100"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    table, aggregates = (out / "table.md").read_text(), (out / "aggregates.md").read_text()
    assert table in result.stdout and aggregates in result.stdout
    assert (out / "evaluations.md").read_text() == report.every_evaluation_tables(report.load_runs(sweep)[0])
    assert "skipped sweep/just-started: no evaluations yet" in result.stdout
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in aggregates.splitlines() if line.startswith("|")]
    assert [r[:4] for r in rows if r[0] == "video_hard" and len(r) == 6] == [
        ["video_hard", "sgqn", "2", "6"],
        ["video_hard", "drq", "2", "5"],
    ]
    assert ["train", "P(sgqn > drq)"] in [r[:2] for r in rows]
    for name in ("curves_cartpole-swingup.png", "curves_walker-walk.png", "aggregate_iqm.png"):
        image = np.asarray(Image.open(out / name).convert("RGB"))
        assert image.shape[0] >= 250 and image.shape[1] >= 600
        assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # lines, bands, text: not blank
        for rgb in ((148, 103, 189), (140, 86, 75)):  # sgqn's and drq's own colours (C4, C5) are drawn
            assert (np.abs(image.astype(int) - rgb).sum(axis=2) < 30).sum() > 50, (name, rgb)
    assert "wrote" in result.stdout.splitlines()[-1]

    # Deterministic: the same seed in another process gives the same intervals.
    cells, _ = report.make_cells(report.load_runs(sweep)[0])
    assert report.aggregates_text(*report.aggregate(cells, 100, 0)[:2], cells, 100, 0) == aggregates


def test_methods_come_in_the_papers_column_order_each_in_its_own_colour(tmp_path):
    """The six methods of the sweep's default grid and one of the user's own, written in no particular order:
    the runs, the table's columns, the aggregates and their pairs come in the paper's order (SAC, RAD, SODA,
    SVEA, SGQN), DrQ beside them, the other last; each of the six keeps its colour whichever methods a report
    holds, and the curves draw them in it."""
    written = ["drq", "my_idea", "soda", "sgqn", "sac", "svea", "rad"]
    for level, method in enumerate(written):
        rows = [(step, "train", ep, step / 20 + 10.0 * level + ep) for step in (1000, 2000) for ep in range(2)]
        write_run(tmp_path / "runs", f"cartpole-swingup__{method}__1", method, "cartpole-swingup", 1, rows)
    order = ["sac", "rad", "soda", "svea", "sgqn", "drq", "my_idea"]
    runs, _ = report.load_runs(tmp_path / "runs")
    assert [r.method for r in runs] == order
    cells, _ = report.make_cells(runs)
    table = report.results_tables(runs, cells, [])
    header = [c.strip() for c in next(line for line in table.splitlines() if line.startswith("| task ")).strip("|").split("|")]
    assert header == ["task"] + [f"{m} train" for m in order]
    scores, pois, _ = report.aggregate(cells, reps=20, seed=0)
    assert list(scores["train"]) == order and next(iter(pois["train"])) == ("sac", "rad")

    colors = report.method_colors(order)
    assert colors == {"sac": "C0", "rad": "C1", "soda": "C2", "svea": "C3", "sgqn": "C4", "drq": "C5", "my_idea": "C6"}
    two_methods = report.method_colors(["soda", "drq"])  # a report of two methods: the same colours
    assert (two_methods["soda"], two_methods["drq"]) == ("C2", "C5")
    (path,) = report.plot_curves(runs, colors, tmp_path)
    image = np.asarray(Image.open(path).convert("RGB"))
    for rgb in ((255, 127, 14), (44, 160, 44)):  # rad's and soda's lines (C1, C2)
        assert (np.abs(image.astype(int) - rgb).sum(axis=2) < 30).sum() > 50, rgb


def test_bad_input_is_one_error_line(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "experiments", "report.py"),
            str(tmp_path / "missing"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"error: RUNS_DIR {tmp_path}/missing is not a folder\n"


@pytest.mark.parametrize(
    "make, flags, message",
    [
        (lambda p: p.mkdir(), {}, "no runs under {p} \\(no args.json found\\)"),
        (lambda p: write_run(p, "r", "drq", "walker-walk", 1, []), {}, "nothing to report under {p}: every run was left out"),
        (
            lambda p: write_run(p, "r", "drq", "walker-walk", 1, [(0, "train", 0, 1.0)]),
            {"step": 5},
            "nothing to report under {p} at step 5",
        ),
        (lambda p: p.mkdir(), {"reps": 0}, "--reps 0: give at least 1 bootstrap resample"),
        (lambda p: p.mkdir(), {"step": -1}, "--step -1: give an agent step >= 0"),
    ],
)
def test_bad_input_stops_before_writing(tmp_path, make, flags, message):
    runs_dir = tmp_path / "runs"
    make(runs_dir)
    with pytest.raises(report.envs.ConfigError, match=message.format(p=runs_dir)):
        report.main(report.Args(runs_dirs=[str(runs_dir)], out=str(tmp_path / "out"), **flags))
    assert not (tmp_path / "out").exists()


def write_saliency(folder, name, rows):
    """rows: (step, frames, mode, mask_on_agent, agent_share, images), as the scripts write them."""
    with open(folder / name, "w") as f:
        f.write("step,frames,mode,mask_on_agent,agent_share,images\n")
        f.writelines(",".join(map(str, row)) + "\n" for row in rows)


def test_saliency_on_the_agent_is_read_tabled_and_plotted(tmp_path):
    """saliency.csv of each run (and eval_checkpoint_step{N}_saliency.csv filling the steps it lacks):
    table.md's section holds each method's mean over seeds at the last step all its runs measured,
    with the agent's share in brackets; a curve per task; malformed lines are named and left out."""
    rng = np.random.default_rng(5)
    steps = [1000, 2000]
    for method, seed, on_agent in (("drq", 1, 0.10), ("drq", 2, 0.20), ("sgqn", 1, 0.62), ("sgqn", 2, 0.70)):
        folder = write_run(
            tmp_path, f"{method}{seed}", method, "cartpole-swingup", seed, eval_rows(rng, method, "cartpole-swingup", steps)
        )
        rows = [(s, 8 * s, mode, on_agent * s / 2000, 0.04, 8) for s in steps for mode in ("train", "video_hard")]
        if (method, seed) == ("sgqn", 2):  # step 2000 from its checkpoint's evaluation after training
            write_saliency(folder, "eval_checkpoint_step2000_saliency.csv", [r for r in rows if r[0] == 2000])
            rows = [r for r in rows if r[0] == 1000] + [(1000, 8000, "train", 1.5, 0.04, 8), ("x",)]
        if (method, seed) == ("drq", 1):  # measured again on more images: that measurement counts
            write_saliency(folder, "eval_checkpoint_step2000_saliency.csv", [(2000, 16000, "train", 0.30, 0.04, 24)])
        if (method, seed) == ("drq", 2):  # measured again on as many images: its own counts
            write_saliency(folder, "eval_checkpoint_step2000_saliency.csv", [(2000, 16000, "video_hard", 0.9, 0.04, 8)])
        write_saliency(folder, "saliency.csv", rows)
    runs, messages = report.load_runs(tmp_path)
    assert not any("starts with" in line for line in messages)  # a _saliency.csv is not read as episode returns
    by_name = {r.name: r for r in runs}
    assert by_name["sgqn2"].saliency["video_hard"] == {1000: (0.35, 0.04), 2000: (0.70, 0.04)}
    assert by_name["drq1"].saliency["train"] == {1000: (0.05, 0.04), 2000: (0.30, 0.04)}
    assert by_name["drq2"].saliency["video_hard"][2000] == (0.20, 0.04)
    assert "ignored 2 malformed line(s) of sgqn2/saliency.csv" in messages
    cells, _ = report.make_cells(runs)
    table = report.results_tables(runs, cells, [])
    section = table.split("## Where the saliency lands")[1].split("##")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("|")]
    assert rows[0] == ["method", "task", "runs", "step (frames)", "train", "video_hard"]
    assert rows[2:] == [
        ["sgqn", "cartpole-swingup", "2", "2000 (16k)", "66 ± 6% (4%)", "66 ± 6% (4%)"],
        ["drq", "cartpole-swingup", "2", "2000 (16k)", "25 ± 7% (4%)", "15 ± 7% (4%)"],  # std of 0.3, 0.2: 0.07
    ]
    at_first = report.results_tables(runs, cells, [], step=1000).split("## Where the saliency lands")[1].split("##")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in at_first.splitlines() if line.startswith("|")]
    assert rows[2] == ["sgqn", "cartpole-swingup", "2", "1000 (8k)", "33 ± 3% (4%)", "33 ± 3% (4%)"]  # (0.31 + 0.35) / 2
    every = report.every_evaluation_tables(runs).split("## cartpole-swingup, train: mask on the agent")[1].split("##")[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in every.splitlines() if line.startswith("|")]
    assert rows[0] == ["step (frames)", "sgqn", "drq"]
    assert rows[2:] == [["1000 (8k)", "33 ± 3% (4%)", "8 ± 4% (4%)"], ["2000 (16k)", "66 ± 6% (4%)", "25 ± 7% (4%)"]]
    paths = report.plot_saliency(runs, {"drq": "C0", "sgqn": "C1"}, tmp_path)
    assert [p.name for p in paths] == ["saliency_cartpole-swingup.png"]
    image = np.asarray(Image.open(paths[0]).convert("RGB"))
    for rgb in ((31, 119, 180), (255, 127, 14)):
        assert (np.abs(image.astype(int) - rgb).sum(axis=2) < 30).sum() > 50


def test_saliency_figure_csv_counts_where_it_measured_more_images(tmp_path):
    """saliency_figure_step{N}.csv (a line per mode and episode of the final checkpoint) is pooled over
    its images and replaces the run's own check at that step where it measured more images; a
    malformed one is named and left out."""
    rng = np.random.default_rng(6)
    folder = write_run(tmp_path, "drq1", "drq", "cartpole-swingup", 1, eval_rows(rng, "drq", "cartpole-swingup", [1000, 2000]))
    write_saliency(folder, "saliency.csv", [(2000, 16000, "train", 0.5, 0.04, 24), (2000, 16000, "video_hard", 0.3, 0.04, 24)])
    with open(folder / "saliency_figure_step2000.csv", "w") as f:
        f.write("mode,episode,return,mask_on_agent,agent_share,images\n")
        f.write("train,0,900.0,0.2,0.03,10\ntrain,1,950.0,0.5,0.05,30\n")  # pooled: (2 + 15) / 40, (0.3 + 1.5) / 40
        f.write("video_hard,0,300.0,0.1,0.04,20\n")  # 20 images < the run's 24: its own counts
        f.write("color_hard,0,500.0,0.25,0.04,375\n")  # a mode the run did not measure
    (folder / "saliency_figure_step1000.csv").write_text("mode,episode,return\ntrain,0,1.0\n")
    runs, messages = report.load_runs(tmp_path)
    saliency = runs[0].saliency
    assert saliency["train"][2000] == pytest.approx((17 / 40, 1.8 / 40))
    assert saliency["video_hard"][2000] == (0.3, 0.04)
    assert saliency["color_hard"] == {2000: (0.25, 0.04)}
    assert 1000 not in saliency["train"]
    assert (
        "took the mask on train at step 2000 of drq1 from saliency_figure_step2000.csv: its 40 images in place of the run's own 24"
        in messages
    )
    assert "took the mask on color_hard at step 2000 of drq1 from saliency_figure_step2000.csv: its 375 images" in messages
    assert any(line.startswith("ignored drq1/saliency_figure_step1000.csv: expected the header") for line in messages)


def test_runs_without_saliency_files_have_no_saliency_section(sweep):
    runs, _ = report.load_runs(sweep)
    cells, _ = report.make_cells(runs)
    assert all(not r.saliency for r in runs)
    assert "Where the saliency lands" not in report.results_tables(runs, cells, [])
    assert report.plot_saliency(runs, {}, sweep) == []
