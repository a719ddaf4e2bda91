"""experiments/saliency_figure.py on the toy task (its agent: the red 4 x 4 square) with tiny critics of
both scripts: its numbers against the same episode replayed here with the scripts' own functions and
against --eval-checkpoint's first episode, the mask panel, the PNG's layout, and bad input."""

import csv
import math
import os
import subprocess
import sys

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import toy_task
from common import ROOT, TINY
from PIL import Image

import envs
import run_plumbing
import sac_baseline as sac
import sgqn
import soda

sys.path.insert(0, os.path.join(ROOT, "experiments"))
import report  # noqa: E402
import saliency_figure  # noqa: E402

MODES = ("train", "video_hard")
STEP = 7  # the shown agent step of the toy's 50-step episode
QUANTILE = {sac: 0.98, sgqn: 0.9}  # sac_baseline: the domain's default; sgqn: the run's --sgqn-quantile
IMAGE = 32
MASK_COLOURS = (saliency_figure.MASK_ON_AGENT, saliency_figure.MASK_OFF_AGENT)


def write_checkpoint(module, path):
    """A tiny agent's checkpoint, its critic's weights jittered so its attribution spreads over every
    pixel (at initialisation each conv is a 1x1 map: most pixels would get none, tied at zero)."""
    quantile = dict(sgqn_quantile=QUANTILE[sgqn]) if module is sgqn else {}
    args = module.Args(**{**TINY, "env_id": "toy-reach", "cuda": False, **quantile})
    torch.manual_seed(0)
    agent = module.make_agent((9, IMAGE, IMAGE), 2, args, torch.device("cpu"))
    with torch.no_grad():
        for parameter in agent.critic.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    run_plumbing.save_checkpoint(path, module.ALGORITHM, agent, args, 20, 0.0)


def replay(module, checkpoint):
    """The figure's episode played again here, envs in this process, seeded as main() seeds an
    --eval-checkpoint evaluation: returns, summed saliency_on_agent counts, and the shown observation
    with its agent pixels."""
    state = torch.load(checkpoint, weights_only=False)
    args = module.Args(**state["args"])
    agent = module.make_agent((9, IMAGE, IMAGE), 2, args, torch.device("cpu"))
    run_plumbing.restore(agent, state)
    eval_seed = np.random.SeedSequence(args.seed, spawn_key=(0,)).spawn(4)[2]
    words = eval_seed.generate_state(len(envs.ALL_MODES))  # a mode's word: its place in ALL_MODES
    mode_envs = [
        toy_task.make_toy_env("toy-reach", int(words[envs.ALL_MODES.index(mode)]), mode, image_size=IMAGE) for mode in MODES
    ]
    obs = np.stack([env.reset(options={"track_agent": True})[0] for env in mode_envs])
    returns, counts, shown = np.zeros(len(MODES)), 0, None
    for t in range(toy_task.EPISODE_LEN):
        agent_pixels = np.stack([env.agent_masks() for env in mode_envs])
        counts = counts + module.saliency_on_agent(agent, obs, agent_pixels, QUANTILE[module], torch.device("cpu"))
        shown = (obs, agent_pixels) if t == STEP else shown
        action = module.policy_action(agent, obs, torch.device("cpu"), True)
        steps = [env.step(a) for env, a in zip(mode_envs, action)]
        obs, returns = np.stack([s[0] for s in steps]), returns + [s[1] for s in steps]
    return agent, returns, counts, *shown


def table_line(mode, episode_return, shown, episode):
    """The table's line of a mode as the test expects it, split in words."""
    (on_shown, chance_shown, _), (on_episode, chance_episode, images) = shown, episode
    percents = [f"{100 * share:.1f}%" for share in (on_shown, on_episode, 0.0, chance_shown, chance_episode)]
    return [mode, f"{episode_return:.1f}", *percents, str(images)]  # 0.0%: the std over one episode


@pytest.mark.parametrize("module", [sac, sgqn], ids=["sac_baseline", "sgqn"])
def test_figure_numbers_are_the_scripts_own_on_the_eval_episode(toy_envs, module, capsys):
    checkpoint, png = str(toy_envs / "checkpoint.pt"), str(toy_envs / "figure.png")
    write_checkpoint(module, checkpoint)
    rows = saliency_figure.main([checkpoint, "--out", png, "--modes", *MODES, "--step", str(STEP)])
    printed = capsys.readouterr().out
    agent, returns, counts, obs, agent_pixels = replay(module, checkpoint)
    quantile, cpu = QUANTILE[module], torch.device("cpu")

    # The episode is --eval-checkpoint's first (same seeds, same batched mean actions).
    evaluated = module.main(module.Args(eval_checkpoint=checkpoint, eval_modes=MODES, eval_episodes=1))
    assert [row.mode for row in rows] == list(MODES)
    assert [row.episode_return for row in rows] == list(returns) == [evaluated[mode][0] for mode in MODES]

    # Over the episode: every observation of the 50 measured, its 3 frames each, by saliency_on_agent.
    episode = run_plumbing.saliency_shares(MODES, counts, toy_task.EPISODE_LEN * 3)
    # At the shown step: the script's guided backprop and mask; the share counted here from the pixels.
    action = torch.as_tensor(module.policy_action(agent, obs, cpu, True))
    attribution = module.guided_backprop(agent.critic, torch.as_tensor(obs).float(), action)
    newest = attribution.abs()[:, -3:].amax(dim=1).flatten(1)  # (modes, H * W): the newest frame's |attribution|
    kept = IMAGE * IMAGE - math.ceil(quantile * (IMAGE * IMAGE - 1))  # the top (1 - rho): 21 of 1024 at 0.98, 103 at 0.9
    lines = {line.split()[0]: line.split() for line in printed.splitlines()[1:-1]}
    for i, row in enumerate(rows):
        mask, agent_square = row.mask, agent_pixels[i, -1]
        assert row.episode == episode[row.mode] and row.episode[2] == 150
        assert torch.equal(row.attribution, attribution[i])
        assert np.array_equal(row.frame, obs[i, -3:].transpose(1, 2, 0)) and np.array_equal(row.agent, agent_square)
        assert np.array_equal(mask, module.saliency_mask(attribution, quantile)[i, -3].numpy())
        assert mask.sum() == kept and agent_square.sum() == 16
        assert np.array_equal(mask.ravel(), (newest[i] >= torch.quantile(newest[i], quantile)).numpy())
        assert row.shown == ((mask & agent_square).sum() / kept, 16 / 1024, 1)
        assert row.episode[1] == 16 / 1024 and 0 <= row.shown[0] <= 1 and 0 <= row.episode[0] <= 1
        assert lines[row.mode] == table_line(row.mode, returns[i], row.shown, row.episode)
    table = png[: -len(".png")] + ".csv"
    assert printed.splitlines()[-1] == f"wrote {png} and {table}"
    with open(table) as f:
        written = list(csv.reader(f))
    assert written[0] == list(saliency_figure.CSV_COLUMNS)
    assert report.FIGURE_HEADER == written[0]  # experiments/report.py reads this CSV by its header
    for line, row, i in zip(written[1:], rows, range(len(rows)), strict=True):  # one episode: a line per mode
        assert line[:2] == [row.mode, "0"] and float(line[2]) == returns[i]
        assert [float(v) for v in line[3:5]] == list(row.episode[:2]) and int(line[5]) == 150

    # The PNG: a row of three panels per mode at the layout's size; the mask panel holds the mask's pixels.
    image = np.asarray(Image.open(png).convert("RGB"))
    height = saliency_figure.HEADER_INCHES + len(MODES) * (saliency_figure.PANEL_INCHES + saliency_figure.ROW_TITLE_INCHES)
    assert image.shape == (
        round(height * saliency_figure.DPI),
        round(3 * saliency_figure.PANEL_INCHES * saliency_figure.DPI),
        3,
    )
    figure = saliency_figure.draw_figure("header", rows, STEP, quantile)
    figure.canvas.draw()
    boxes = [ax.get_window_extent() for ax in figure.axes]
    assert len(boxes) == 3 * len(MODES)
    for row, panels in zip(rows, np.reshape(figure.axes, (len(MODES), 3))):
        frame_panel, _, mask_panel = (ax.get_images()[0].get_array() for ax in panels)
        assert np.array_equal(frame_panel, row.frame)
        in_mask = (mask_panel[..., None, :] == np.array(MASK_COLOURS)).all(axis=-1).any(axis=-1)
        assert np.array_equal(in_mask, row.mask)
    plt.close(figure)
    columns, tops = sorted({round(b.x0) for b in boxes}), [round(b.y1) for b in boxes]
    assert (
        len(columns) == 3
        and tops[::3] == sorted(tops[::3], reverse=True)
        and all(len(set(tops[i : i + 3])) == 1 for i in range(0, len(tops), 3))
    )
    scale = min(boxes[0].width, boxes[0].height) / IMAGE  # PNG pixels per observation pixel
    mask_colours = (image[..., None, :] == np.array(MASK_COLOURS)).all(axis=-1).sum()
    assert mask_colours == pytest.approx(sum(row.mask.sum() for row in rows) * scale**2, rel=0.15)


def test_episodes_measure_the_mask_over_the_first_n_eval_episodes(toy_envs, capsys):
    """--episodes 3: the returns are --eval-checkpoint's first 3 episodes; the first is the one-episode
    figure's; the pooled share is the mean of the episodes' (each has the same images and mask size);
    the printed std is theirs; the CSV has a line per mode and episode."""
    checkpoint, png = str(toy_envs / "checkpoint.pt"), str(toy_envs / "three.png")
    write_checkpoint(sgqn, checkpoint)
    one = saliency_figure.main([checkpoint, "--out", str(toy_envs / "one.png"), "--modes", *MODES, "--step", str(STEP)])
    rows = saliency_figure.main([checkpoint, "--out", png, "--modes", *MODES, "--episodes", "3", "--step", str(STEP)])
    printed = capsys.readouterr().out.split("wrote")[-2].splitlines()  # the second figure's table
    evaluated = sgqn.main(sgqn.Args(eval_checkpoint=checkpoint, eval_modes=MODES, eval_episodes=3))
    lines = {line.split()[0]: line.split() for line in printed if line.split() and line.split()[0] in MODES}
    for row, first in zip(rows, one, strict=True):
        assert [r for r, _ in row.per_episode] == list(evaluated[row.mode])
        assert row.per_episode[0] == (first.episode_return, first.episode) and row.shown == first.shown
        shares = np.array([share for _, (share, _, _) in row.per_episode])
        assert row.episode[0] == pytest.approx(shares.mean()) and row.episode[2] == 3 * 150
        assert lines[row.mode][4] == f"{100 * shares.std():.1f}%"
    with open(png[: -len(".png")] + ".csv") as f:
        written = list(csv.DictReader(f))
    assert [(r["mode"], r["episode"]) for r in written] == [(mode, str(e)) for mode in MODES for e in range(3)]
    by_mode = {row.mode: row for row in rows}
    for r in written:
        episode_return, (share, chance, images) = by_mode[r["mode"]].per_episode[int(r["episode"])]
        written_values = (float(r["return"]), float(r["mask_on_agent"]), float(r["agent_share"]), int(r["images"]))
        assert written_values == (episode_return, share, chance, images)


BAD = [
    (["missing.pt"], "checkpoint not found: missing.pt"),
    (["{ckpt}", "--modes", "train", "fog"], "--modes: unknown mode 'fog'"),
    (["{ckpt}", "--modes", "train", "train"], "a mode is listed twice"),
    (["{ckpt}", "--step", "-1"], "--step -1: must be 0 or more"),
    (["{ckpt}", "--episodes", "0"], "--episodes 0: must be 1 or more"),
    (["{ckpt}", "--out", "nowhere/figure.png"], "its folder does not exist"),
    (["{ckpt}", "--out", "figure.xyz"], "give a picture file name"),
    (["{ckpt}", "--stpe", "3"], "unrecognized --stpe"),
    (["{ckpt}", "--modes", "train", "--step", "50"], "--step 50: an episode of toy-reach has 50 steps"),
    (["{foreign}"], "cannot read checkpoint foreign.pt .KeyError.: is it a checkpoint of sgqn.py or sac_baseline.py"),
    (["{text}"], "cannot read checkpoint notes.pt"),
]


@pytest.mark.parametrize(
    "argv, message",
    BAD,
    ids=["missing", "mode", "twice", "step", "episodes", "folder", "format", "flag", "late", "foreign", "text"],
)
def test_bad_input_is_a_config_error_before_the_episode(toy_envs, monkeypatch, argv, message):
    write_checkpoint(sac, "checkpoint.pt")
    torch.save({"weights": torch.zeros(3)}, "foreign.pt")
    with open("notes.pt", "w") as f:
        f.write("not a checkpoint\n")

    def no_episode(*args):
        raise AssertionError("the episode started")

    monkeypatch.setattr(saliency_figure, "play_episode", no_episode)
    files = dict(ckpt="checkpoint.pt", foreign="foreign.pt", text="notes.pt")
    with pytest.raises(envs.ConfigError, match=message):
        saliency_figure.main([word.format(**files) for word in argv])


@pytest.mark.parametrize("foreign", [False, True], ids=["missing", "foreign"])
def test_bad_input_exits_2_with_one_error_line(tmp_path, foreign):
    checkpoint = tmp_path / "checkpoint.pt"
    if foreign:
        torch.save({"algorithm": "ppo", "args": {"env_id": "walker-walk"}}, checkpoint)
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "experiments", "saliency_figure.py"),
            str(checkpoint),
            "--out",
            str(tmp_path / "f.png"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    expected = "written by ppo.py, not sgqn.py or sac_baseline.py" if foreign else f"checkpoint not found: {checkpoint}"
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and expected in result.stderr


def test_a_soda_checkpoint_is_drawn_on_the_centre_crop_its_networks_see(toy_envs, capsys):
    """SODA (and RAD) render 16 px larger: the figure shows, masks and measures the centre image_size crop, the
    frames its critic reads, and its numbers are --eval-checkpoint's (the same episode)."""
    checkpoint, png = str(toy_envs / "checkpoint.pt"), str(toy_envs / "figure.png")
    args = soda.Args(**{**TINY, "env_id": "toy-reach", "cuda": False})
    torch.manual_seed(0)
    agent = soda.make_agent((9, IMAGE, IMAGE), 2, args, torch.device("cpu"))
    with torch.no_grad():
        for parameter in agent.critic.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    run_plumbing.save_checkpoint(checkpoint, soda.ALGORITHM, agent, args, 20, 0.0)
    rows = saliency_figure.main([checkpoint, "--out", png, "--modes", *MODES, "--step", str(STEP)])
    assert capsys.readouterr().out.splitlines()[-1] == f"wrote {png} and {png[:-4]}.csv"
    evaluated = soda.main(soda.Args(eval_checkpoint=checkpoint, eval_modes=MODES, eval_episodes=1))
    assert [row.episode_return for row in rows] == [evaluated[mode][0] for mode in MODES]
    for row in rows:
        assert row.frame.shape == (IMAGE, IMAGE, 3) and row.mask.shape == row.agent.shape == (IMAGE, IMAGE)
        assert row.attribution.shape == (9, IMAGE, IMAGE) and row.episode[2] == 150
        kept = IMAGE * IMAGE - math.ceil(0.98 * (IMAGE * IMAGE - 1))  # the domain's default quantile, on the crop
        assert row.mask.sum() == kept
