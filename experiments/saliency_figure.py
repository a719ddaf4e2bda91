"""Where each critic looks: the SGQN paper's Figure 1, measured on a checkpoint.

    python experiments/saliency_figure.py runs/<run>/checkpoint.pt
    python experiments/saliency_figure.py CHECKPOINT --out walker_sgqn.png --modes train color_hard video_hard --step 60
    python experiments/saliency_figure.py CHECKPOINT --episodes 10   # the mask measured over 10 episodes per mode

Loads a checkpoint of sgqn.py, sac_baseline.py or soda.py (its saved args say which script, task and
networks) and plays one episode per mode, the first episode that `python <script>.py
--eval-checkpoint CHECKPOINT --eval-modes <modes>` plays: the same eval seed, the same workers
(run_plumbing.make_eval_envs), the modes stepping together, the policy's mean action. Every
observation of the episode is measured with the script's own `saliency_on_agent` (the script's
evaluation measures every SALIENCY_EVERY-th): the critic's saliency mask (guided backprop of Q1 at
the mean action, kept at the run's quantile rho per stacked frame: SGQN's --sgqn-quantile, else the
domain's default, as the scripts measure it) against the agent's pixels (`agent_masks()`). RAD's and
SODA's frames, rendered 16 px larger, are measured and shown at their centre, as their networks see them.

The figure has a row per mode, at agent step --step (0: the first observation):
  the observation's newest frame | the critic's guided-backprop heat map of it (the script's
  `guided_backprop`, drawn as sgqn.py's videos draw it) | its mask (`saliency_mask` at rho), yellow
  on the agent, red off it, the agent's pixels outside the mask blue, over the frame dimmed.
A row's title gives the share of the mask on the agent in that frame and over the episode (every
observation, each of its stacked frames, as saliency.csv counts them), each against chance (the
agent's share of the image). With --episodes N the mask is measured over the first N episodes
that --eval-checkpoint plays (one episode's share can be far from another's: a distracted
critic's mask comes and goes); the figure still shows the first. A table is printed (mode, return
of the first episode, mask on agent in the shown frame and over the N episodes with its std over
episodes, chance in both, images measured) and a CSV written beside the picture (same name, .csv,
the numbers to aggregate over seeds): a row per mode and episode with its return, the share of
the mask on the agent over that episode, chance and images measured.

Bad input (a missing or foreign checkpoint, an unknown mode, a bad flag) is one `error:` line on
stderr, exit status 1 (as the training scripts), before the episode starts.
"""

import csv
import dataclasses
import importlib
import os
import sys
from dataclasses import dataclass
from typing import Annotated, Optional

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import tyro  # noqa: E402
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import envs  # noqa: E402
import run_plumbing  # noqa: E402
import sgqn  # noqa: E402  (heat_map, heat_colours: how the runs draw saliency)

SCRIPTS = ("sgqn", "sac_baseline", "soda")  # the scripts whose checkpoints this reads (their ALGORITHM)
PANEL_INCHES, ROW_TITLE_INCHES, HEADER_INCHES, DPI = 2.5, 0.55, 0.7, 100  # the PNG's layout
MASK_ON_AGENT, MASK_OFF_AGENT, AGENT_OUTSIDE_MASK = (255, 220, 0), (235, 40, 40), (60, 120, 255)  # mask panel colours


@dataclass
class Args:
    """Where a checkpoint's critic looks, a row per mode on its first --eval-checkpoint episode: newest frame | guided-backprop heat map | saliency mask (module docstring: details)."""

    checkpoint: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="CHECKPOINT")]
    """a checkpoint.pt (or checkpoint_step{N}.pt) of sgqn.py, sac_baseline.py or soda.py"""
    out: Optional[str] = None
    """picture to write (.png, .pdf, .svg); default: saliency_figure_step{N}.png beside the checkpoint"""
    modes: tuple[str, ...] = ("train", "color_hard", "video_hard")
    """modes to play one episode of, a row each, in this order (each with its own eval seed, as in --eval-modes)"""
    step: int = 60
    """agent step of the episode whose observation the row shows (0: the first observation)"""
    episodes: int = 1
    """episodes per mode to measure the mask over: the first N that --eval-checkpoint plays (the figure shows the first)"""
    video_easy_dir: Optional[str] = None
    """folder of video_easy's background videos, instead of the checkpoint's (as --eval-checkpoint allows)"""
    video_hard_dir: Optional[str] = None
    """folder of video_hard's background videos, instead of the checkpoint's"""
    davis_dir: Optional[str] = None
    """DAVIS 2017 folder for the distracting_cs modes, instead of the checkpoint's"""


def check_flags(flags):
    """The flags' own checks, before the checkpoint is read (each a one-line envs.ConfigError; a missing checkpoint is load_checkpoint's)."""
    if not flags.modes:
        raise envs.ConfigError(f"--modes is empty: give one or more of {' '.join(envs.ALL_MODES)}")
    for mode in flags.modes:
        if mode not in envs.ALL_MODES:
            raise envs.ConfigError(f"--modes: unknown mode {mode!r}; valid modes: {' '.join(envs.ALL_MODES)}")
    if len(set(flags.modes)) < len(flags.modes):
        raise envs.ConfigError(f"--modes {' '.join(flags.modes)}: a mode is listed twice")
    if flags.step < 0:
        raise envs.ConfigError(f"--step {flags.step}: must be 0 or more")
    if flags.episodes < 1:
        raise envs.ConfigError(f"--episodes {flags.episodes}: must be 1 or more")
    if flags.out is not None:
        extension = os.path.splitext(flags.out)[1][1:].lower()
        if extension not in FigureCanvasBase.get_supported_filetypes():
            raise envs.ConfigError(f"--out {flags.out}: give a picture file name (.png, .pdf, .svg)")
        if not os.path.isdir(os.path.dirname(flags.out) or "."):
            raise envs.ConfigError(f"--out {flags.out}: its folder does not exist")


def read_checkpoint(path):
    """The checkpoint's state (read once: with its replay buffer it is GBs) and the script that wrote it (imported)."""
    state = run_plumbing.load_checkpoint(path, SCRIPTS)
    return state, importlib.import_module(state["algorithm"])


def checkpoint_args(script, state, flags):
    """The args the checkpoint was trained with, evaluating the figure's modes (one episode each, its
    video folders where given, no torch.compile), each mode's env checked as the script checks it."""
    saved = {f.name: state["args"][f.name] for f in dataclasses.fields(script.Args) if f.name in state["args"]}
    folders = {
        name: getattr(flags, name) for name in ("video_easy_dir", "video_hard_dir", "davis_dir") if getattr(flags, name)
    }
    args = dataclasses.replace(script.Args(**saved), eval_modes=flags.modes, eval_episodes=1, compile=False, **folders)
    for mode in args.eval_modes:
        envs.check_args(args.env_id, mode, **run_plumbing.env_flags(args, mode))
    return args


def eval_seed(args):
    """The SeedSequence of the evaluation envs, as the scripts' main() spawns it for --eval-checkpoint
    (start step 0; run_plumbing.make_eval_envs gives each mode its own word of it)."""
    _, _, seed, _ = np.random.SeedSequence(args.seed, spawn_key=(0,)).spawn(4)  # buffer, env, eval, action
    return seed


def play_episode(script, agent, eval_envs, quantile, shown_step, device):
    """One mean-action episode per mode, the modes stepping together, as script.evaluate plays each of
    its episodes, with every observation before the end measured by script.saliency_on_agent. Returns the
    returns (modes,), the observations and agent pixels at `shown_step` (None if not given), the summed
    mask_on_agent counts (modes, 4) and the observations measured per mode."""
    obs, _ = eval_envs.reset(options={"track_agent": True})
    modes = eval_envs.num_envs
    returns, done, counts, measured, shown, t = np.zeros(modes), np.zeros(modes, dtype=bool), 0, 0, None, 0
    while not done.all():
        if not done.any():  # as evaluate: no mode's episode has ended (an ended env restarts)
            agent_pixels = np.stack(eval_envs.call("agent_masks"))
            counts = counts + script.saliency_on_agent(agent, obs, agent_pixels, quantile, device)
            measured += 1
            size = agent.critic.conv.in_size  # shown as the networks see them (the centre of RAD's and SODA's frames)
            shown = (script.center_crop(obs, size), script.center_crop(agent_pixels, size)) if t == shown_step else shown
        obs, reward, terminated, truncated, _ = eval_envs.step(script.policy_action(agent, obs, device, True))
        returns += np.where(done, 0.0, reward)
        done |= terminated | truncated
        t += 1
        run_plumbing.heartbeat(f"playing the episode: step {t}")
    if shown is None and shown_step is not None:
        raise envs.ConfigError(f"--step {shown_step}: the episode ended at step {t}; give a step before it")
    return returns, shown, counts, measured


def shown_saliency(script, agent, obs, agent_pixels, quantile, device):
    """At the shown observations: the critic's guided-backprop attribution (script.guided_backprop of
    Q1 at the mean action), its saliency mask at `quantile` (script.saliency_mask), and the newest
    frame's mask_on_agent counts (modes, 4)."""
    obs_t = torch.as_tensor(obs, device=device).float()
    action = torch.as_tensor(script.policy_action(agent, obs, device, True), device=device)
    attribution = script.guided_backprop(agent.critic, obs_t, action)
    mask = script.saliency_mask(attribution, quantile)
    newest = run_plumbing.mask_on_agent(mask[:, -3:], torch.as_tensor(agent_pixels[:, -1:], device=device))
    return attribution, mask, newest.cpu()


@dataclass
class Row:
    """One mode's row of the figure and line of the table."""

    mode: str
    episode_return: float
    shown: tuple  # (share of the mask on the agent, agent's share, images) in the newest frame at --step
    episode: tuple  # the same over the measured episodes, pooled (run_plumbing.saliency_shares)
    per_episode: list  # [(return, (share, agent's share, images))] of each measured episode
    frame: np.ndarray  # (H, W, 3) uint8: the newest frame of the observation at --step
    attribution: torch.Tensor  # (3F, H, W): the critic's guided-backprop attribution of that observation
    mask: np.ndarray  # (H, W) bool: the newest frame's saliency mask
    agent: np.ndarray  # (H, W) bool: the agent's pixels in the newest frame


def mask_picture(frame, mask, agent):
    """(H, W, 3) uint8: the frame dimmed to grey, the mask over it in MASK_ON_AGENT where it covers the
    agent and MASK_OFF_AGENT elsewhere, the agent's pixels outside the mask in AGENT_OUTSIDE_MASK."""
    picture = np.repeat((0.35 * frame.mean(axis=-1, keepdims=True)).astype(np.uint8), 3, axis=-1)
    picture[mask & agent], picture[mask & ~agent], picture[~mask & agent] = MASK_ON_AGENT, MASK_OFF_AGENT, AGENT_OUTSIDE_MASK
    return picture


def draw_figure(header, rows, step, quantile):
    """`header` (text) above a row per Row: its title (return; mask on agent at `step` and over the
    episode, against chance), then newest frame | heat map (sgqn.py's colours) | mask_picture. The
    size is fixed by PANEL_INCHES, ROW_TITLE_INCHES, HEADER_INCHES and DPI."""
    heights = [HEADER_INCHES] + [PANEL_INCHES + ROW_TITLE_INCHES] * len(rows)
    figure = plt.figure(figsize=(3 * PANEL_INCHES, sum(heights)), dpi=DPI)
    header_part, *row_parts = figure.subfigures(len(rows) + 1, 1, height_ratios=heights)
    header_part.text(0.5, 0.5, header, ha="center", va="center", fontsize=7.5)
    heat = sgqn.heat_colours(sgqn.heat_map(torch.stack([row.attribution for row in rows])))
    for part, row, row_heat in zip(row_parts, rows, heat):
        (on_shown, chance_shown, _), (on_episode, chance_episode, images) = row.shown, row.episode
        over = "the episode" if len(row.per_episode) == 1 else f"{len(row.per_episode)} episodes"
        part.suptitle(
            f"{row.mode}: return {row.episode_return:.1f}\nmask on agent {100 * on_shown:.1f}% at step {step} "
            f"(chance {100 * chance_shown:.1f}%), {100 * on_episode:.1f}% over {over} (chance {100 * chance_episode:.1f}%, {images} images)",
            fontsize=8.5,
            y=0.995,
            va="top",
        )
        panels = (
            (row.frame, f"newest frame, step {step}"),
            (row_heat, "guided backprop of Q1 (|grad|, scaled)"),
            (mask_picture(row.frame, row.mask, row.agent), f"mask: top {100 * (1 - quantile):.0f}% (rho {quantile})"),
        )
        title_share = (ROW_TITLE_INCHES - 0.05) / (PANEL_INCHES + ROW_TITLE_INCHES)
        part.subplots_adjust(left=0.02, right=0.98, bottom=0.01, top=1 - title_share, wspace=0.06)
        for ax, (picture, panel_title) in zip(part.subplots(1, 3), panels):
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(panel_title, fontsize=7.5, pad=2)
            ax.set_axis_off()
    return figure


def results_table(rows, step):
    """A line per mode: return (first episode), mask on agent (frame at `step`; the measured episodes,
    pooled, and the std of the episodes' shares), chance (both), images measured."""
    lines = [
        f"{'mode':<22} {'return':>8} {f'on agent @{step}':>14} {'on agent ep.':>12} {'std ep.':>8} "
        f"{f'chance @{step}':>12} {'chance ep.':>10} {'images':>7}"
    ]
    for row in rows:
        (on_shown, chance_shown, _), (on_episode, chance_episode, images) = row.shown, row.episode
        shares = np.array([share for _, (share, _, _) in row.per_episode])
        lines.append(  # std over episodes with ddof=0: 0.0% for one episode
            f"{row.mode:<22} {row.episode_return:>8.1f} {100 * on_shown:>13.1f}% {100 * on_episode:>11.1f}% "
            f"{100 * shares.std():>7.1f}% {100 * chance_shown:>11.1f}% {100 * chance_episode:>9.1f}% {images:>7d}"
        )
    return "\n".join(lines)


CSV_COLUMNS = ("mode", "episode", "return", "mask_on_agent", "agent_share", "images")


def write_csv(path, rows):
    """Each measured episode of each mode (shares as fractions, full precision), a line each."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            for episode, (episode_return, (on_agent, chance, images)) in enumerate(row.per_episode):
                writer.writerow([row.mode, episode, episode_return, on_agent, chance, images])


def main(argv=None):
    """Draw the figure, print its table and return its Rows. Bad input raises envs.ConfigError before the episode starts."""
    flags, _ = run_plumbing.parse_cli(Args, argv)
    check_flags(flags)
    state, script = read_checkpoint(flags.checkpoint)
    args = checkpoint_args(script, state, flags)
    # rho as each script's evaluation measures it: sgqn.py's main sets --sgqn-quantile (or the domain's
    # default) into the args it saves; sac_baseline.py and soda.py measure at the domain's default.
    quantile = getattr(args, "sgqn_quantile", None) or script.domain_quantile(args.env_id)
    out = flags.out or os.path.join(os.path.dirname(flags.checkpoint), f"saliency_figure_step{state['step']}.png")
    run_plumbing.cuda_settings(args)
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
    run_plumbing.render_on(device)  # EGL on the GPU the figure computes on, before the first env

    eval_envs = run_plumbing.make_eval_envs(args, eval_seed(args))
    try:
        episode_steps = eval_envs.get_attr("max_episode_steps")[0]
        if episode_steps is not None and flags.step >= episode_steps:
            raise envs.ConfigError(
                f"--step {flags.step}: an episode of {args.env_id} has {episode_steps} steps (0 to {episode_steps - 1})"
            )
        obs_shape, action_dim = (
            (3 * args.frame_stack, args.image_size, args.image_size),
            eval_envs.single_action_space.shape[0],
        )
        agent = script.make_agent(obs_shape, action_dim, args, device)
        run_plumbing.restore(agent, state)
        # The first N episodes --eval-checkpoint plays (evaluate resets the envs before each); the first is shown.
        played = [
            play_episode(script, agent, eval_envs, quantile, flags.step if episode == 0 else None, device)
            for episode in range(flags.episodes)
        ]
    finally:
        eval_envs.close()
    returns, shown_at, counts, measured = zip(*played)  # one of each per episode
    obs, agent_pixels = shown_at[0]
    attribution, mask, newest_counts = shown_saliency(script, agent, obs, agent_pixels, quantile, device)
    shown = run_plumbing.saliency_shares(args.eval_modes, newest_counts, 1)
    each = [run_plumbing.saliency_shares(args.eval_modes, c, n * args.frame_stack) for c, n in zip(counts, measured)]
    pooled = run_plumbing.saliency_shares(args.eval_modes, sum(counts), sum(measured) * args.frame_stack)
    frames, masks = obs[:, -3:].transpose(0, 2, 3, 1), mask[:, -3].cpu().numpy()
    rows = [
        Row(
            mode,
            returns[0][i],
            shown[mode],
            pooled[mode],
            [(episode_returns[i], shares[mode]) for episode_returns, shares in zip(returns, each)],
            frames[i],
            attribution[i].cpu(),
            masks[i],
            agent_pixels[i, -1],
        )
        for i, mode in enumerate(args.eval_modes)
    ]

    trained_frames = state["step"] * run_plumbing.action_repeat(args)
    header = (
        f"Where the critic looks: {script.ALGORITHM}.py, {args.env_id}, seed {args.seed}, checkpoint step {state['step']} ({trained_frames} frames)\n"
        f"the first --eval-checkpoint episode of each mode (mean actions); mask: each frame's top {100 * (1 - quantile):.0f}% "
        f"of guided backprop of Q1 (rho {quantile})\nmask panel: yellow = mask on the agent, red = mask off the agent, blue = agent outside the mask"
    )
    figure = draw_figure(header, rows, flags.step, quantile)
    figure.savefig(out)
    plt.close(figure)
    table = os.path.splitext(out)[0] + ".csv"
    write_csv(table, rows)
    print(results_table(rows, flags.step))
    print(f"wrote {out} and {table}")
    return rows


if __name__ == "__main__":
    try:
        main()
    except envs.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
