"""Where the critic's saliency lands against the truth (the agent's pixels from the env): the count
function on masks whose answer is known, and the measure through evaluate, the run files, TensorBoard
and --eval-checkpoint of both scripts, on the toy task (whose agent is its red square)."""

import csv
import math
import os

import numpy as np
import pytest
import torch
from common import TINY, read_scalars

import run_plumbing
import sac_baseline as sac
import sgqn

MODULES = pytest.mark.parametrize("module", [sac, sgqn], ids=["sac_baseline", "sgqn"])


def share(counts):
    on_agent, in_mask, agent, pixels = counts.sum(0).tolist()
    return on_agent / in_mask, agent / pixels


def blobs(batch, frames=3, size=84, seed=0):
    """An 'agent' per sample and frame: a random rectangle, about 2-10% of the image."""
    rng = np.random.default_rng(seed)
    agent = np.zeros((batch, frames, size, size), dtype=bool)
    for b in range(batch):
        for f in range(frames):
            h, w = rng.integers(12, 26, 2)
            y, x = rng.integers(0, size - h), rng.integers(0, size - w)
            agent[b, f, y : y + h, x : x + w] = True
    return torch.as_tensor(agent)


def test_mask_on_agent_is_one_on_the_agent_zero_off_it_and_chance_for_a_random_mask():
    agent = blobs(64)
    as_mask = agent.repeat_interleave(3, dim=1)  # saliency_mask's layout: each frame's mask over its 3 channels
    on_agent, agent_share = share(run_plumbing.mask_on_agent(as_mask, agent))
    assert on_agent == 1.0 and agent_share == pytest.approx(agent.float().mean().item())
    assert share(run_plumbing.mask_on_agent(~as_mask, agent))[0] == 0.0
    # A uniform random mask keeping 5% of the pixels: its share on the agent is a proportion over
    # n = 5% of 64 x 3 x 84 x 84 pixels, of mean the agent's share a and std sqrt(a (1 - a) / n)
    # (0.0008 here); 5 std leaves a false failure at about 1 in 3 million.
    random_mask = (torch.rand(64, 3, 84, 84, generator=torch.Generator().manual_seed(1)) < 0.05).repeat_interleave(3, dim=1)
    on_agent, agent_share = share(run_plumbing.mask_on_agent(random_mask, agent))
    n = random_mask[:, ::3].sum().item()
    assert abs(on_agent - agent_share) < 5 * math.sqrt(agent_share * (1 - agent_share) / n)
    counts = run_plumbing.mask_on_agent(as_mask[:2], agent[:2])
    assert counts.shape == (2, 4) and counts[:, 3].tolist() == [3 * 84 * 84] * 2  # per sample


@MODULES
def test_saliency_on_agent_counts_the_critics_mask_at_the_quantile(module):
    """The measured mask is the critic's: guided backprop at the policy's mean action, kept at rho per
    frame, so the mask holds about 1 - rho of every frame's pixels."""
    torch.manual_seed(0)
    agent = module.make_agent((9, 32, 32), 2, module.Args(**TINY), torch.device("cpu"))
    obs = np.random.default_rng(0).integers(0, 256, (5, 9, 32, 32), dtype=np.uint8)
    agent_pixels = list(blobs(5, size=32).numpy())
    counts = module.saliency_on_agent(agent, obs, agent_pixels, 0.9, torch.device("cpu"))
    assert counts.shape == (5, 4)
    assert ((counts[:, 1] >= 3 * 0.1 * 32 * 32 - 3) & (counts[:, 1] <= 3 * 0.1 * 32 * 32 + 3)).all()
    action = torch.as_tensor(module.policy_action(agent, obs, torch.device("cpu"), True))
    attribution = sgqn.guided_backprop(agent.critic, torch.as_tensor(obs).float(), action)
    mask = sgqn.saliency_mask(attribution, 0.9)
    assert torch.equal(counts, run_plumbing.mask_on_agent(mask, torch.as_tensor(np.stack(agent_pixels))))


@MODULES
def test_training_writes_where_the_saliency_lands_and_eval_checkpoint_too(toy_envs, module, capsys):
    """saliency.csv has a row per evaluation and mode; the agent's share is the toy's red square
    (4 x 4 of 32 x 32 pixels); three frames per stack are measured at steps 15, 30 and 45 of the
    50-step first episode; TensorBoard has the curve; --eval-checkpoint prints and writes it."""
    modes = ("train", "video_hard")
    args = module.Args(
        **{
            **TINY,
            **dict(
                env_id="toy-reach",
                learning_starts=10,
                eval_episodes=2,
                eval_modes=modes,
                total_timesteps=40,
                eval_freq=20,
                save_freq=20,
                console_freq=10**6,
            ),
        }
    )
    run_dir = module.main(args)
    with open(os.path.join(run_dir, "saliency.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == run_plumbing.SALIENCY_COLUMNS
    assert [(r["step"], r["mode"]) for r in rows] == [(str(s), m) for s in (20, 40) for m in modes]
    for r in rows:
        assert float(r["agent_share"]) == pytest.approx(16 / 1024) and r["images"] == "9"
        assert 0 <= float(r["mask_on_agent"]) <= 1
    scalars = read_scalars(run_dir)
    assert [s for s, _ in scalars["eval/video_hard/saliency_on_agent"]] == [20, 40]
    assert "mask on agent (chance)" in capsys.readouterr().out

    returns = module.main(
        module.Args(eval_checkpoint=os.path.join(run_dir, "checkpoint.pt"), eval_modes=("color_hard",), eval_episodes=1)
    )
    assert returns["color_hard"].shape == (1,)
    printed = capsys.readouterr().out
    path = os.path.join(run_dir, "eval_checkpoint_step40_saliency.csv")
    assert path in printed and "(1.6%)" in printed
    with open(path, newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert (row["step"], row["mode"], row["images"]) == ("40", "color_hard", "9")


def test_a_mask_that_follows_the_agent_scores_one_through_evaluate(toy_envs, monkeypatch):
    """evaluate hands each measured stack's agent pixels to the count with the right frames: with the
    saliency mask replaced by the toy's own red pixels (read from the observation), every mode scores 1."""

    def red_pixels(attribution, quantile):  # ignores the attribution: the truth, taken from obs
        return observed["obs"][:, ::3].eq(255).logical_and(observed["obs"][:, 1::3].eq(0)).repeat_interleave(3, dim=1)

    observed = {}
    real_guided = sac.guided_backprop

    def guided(critic, obs, action):
        observed["obs"] = obs
        return real_guided(critic, obs, action)

    monkeypatch.setattr(sac, "saliency_mask", red_pixels)
    monkeypatch.setattr(sac, "guided_backprop", guided)
    args = sac.Args(**{**TINY, **dict(env_id="toy-reach", eval_episodes=1, eval_modes=("train", "color_hard"))})
    agent = sac.make_agent((9, 32, 32), 2, args, torch.device("cpu"))
    eval_envs = run_plumbing.make_eval_envs(args, np.random.SeedSequence(0))
    try:
        returns, _, saliency = sac.evaluate(agent, eval_envs, args, torch.device("cpu"), 0.98)
    finally:
        eval_envs.close()
    assert saliency.keys() == {"train", "color_hard"}
    assert all(on_agent == 1.0 and agent_share == pytest.approx(16 / 1024) for on_agent, agent_share, _ in saliency.values())
