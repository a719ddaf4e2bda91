"""soda.py: SODA's parts against independent computations, the update without its auxiliary task against RAD's,
then end to end on the toy task (its repeated SAC code is held to sac_baseline.py's by test_shared_code.py)."""

import dataclasses
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from common import ROOT, TINY, read_scalars

import sac_baseline
import soda

RENDERED = TINY["image_size"] + 16  # RAD's and SODA's frames are rendered 16 px larger than the networks' input


def tiny_args(**overrides):
    return soda.Args(**{**TINY, "soda_batch_size": 6, "cuda": False, **overrides})


def make_agent(args):
    return soda.make_agent((9, args.image_size, args.image_size), 2, args, torch.device("cpu"))


def frames(n, size=RENDERED):
    return torch.randint(0, 256, (n, 9, size, size)).float()


def test_predictor_reads_the_critics_conv_stack_and_the_target_starts_as_a_copy_of_it():
    """The predictor's conv stack is the critic's (the aux loss trains it); its target has its own copy, equal at
    the start; every SODA width is projection_dim; the target critic starts equal to the critic (the original's
    construction re-initialises the critic's convs after that copy: not reproduced, docs/soda.md)."""
    torch.manual_seed(0)
    agent = make_agent(tiny_args())
    assert agent.soda_predictor.conv is agent.critic.conv and agent.soda_target.conv is not agent.critic.conv
    for online, target in zip(agent.soda_predictor.parameters(), agent.soda_target.parameters()):
        assert torch.equal(online, target) and not target.requires_grad
    for online, target in zip(agent.critic.parameters(), agent.critic_target.parameters()):
        assert torch.equal(online, target)
    widths = [m.out_features for m in agent.soda_predictor.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [TINY["projection_dim"]] * 4
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in agent.soda_predictor.modules()) == 2
    optimised = {id(p) for group in agent.soda_optimizer.param_groups for p in group["params"]}
    assert {id(p) for p in agent.critic.conv.parameters()} <= optimised
    assert agent.soda_optimizer.param_groups[0]["lr"] == 3e-4 and agent.soda_optimizer.param_groups[0]["betas"] == (0.9, 0.999)


def test_aux_step_against_a_hand_computation(monkeypatch):
    """On served crops and images: the loss is the MSE of the normalised predictor output on the overlaid second
    crop and the normalised target encoding of the clean first crop; one Adam step of the predictor and the conv
    stack; then target <- target + soda_tau (predictor - target), every parameter, batch norms in batch statistics."""
    torch.manual_seed(0)
    args = tiny_args(soda_tau=0.1)
    agent = make_agent(args)
    obs = frames(6)
    crops = [obs[..., 3 : 3 + 32, 5 : 5 + 32].clone(), obs[..., 10 : 10 + 32, 0:32].clone()]
    images = torch.rand(6, 3, 32, 32) * 255
    served = list(crops)
    monkeypatch.setattr(soda, "random_crop", lambda x, size: served.pop(0))
    before = {name: p.detach().clone() for name, p in agent.soda_predictor.named_parameters()}
    target_before = {name: p.detach().clone() for name, p in agent.soda_target.named_parameters()}
    overlaid = 0.5 * crops[1] + 0.5 * images.repeat(1, 3, 1, 1)
    expected = F.mse_loss(
        F.normalize(agent.soda_predictor(overlaid), dim=1), F.normalize(agent.soda_target.encode(crops[0]), dim=1)
    ).item()
    metrics = soda.update_soda(agent, obs, args, images)
    assert served == [] and metrics["losses/soda_loss"].item() == pytest.approx(expected, rel=1e-6)
    after = dict(agent.soda_predictor.named_parameters())
    assert all(
        not torch.equal(after[name], before[name]) for name in ("conv.convs.0.weight", "projection.0.weight", "head.3.weight")
    )
    for name, target in agent.soda_target.named_parameters():
        moved = target_before[name] + 0.1 * (after[name].detach() - target_before[name])
        assert torch.allclose(target, moved, atol=1e-6), name
    assert agent.soda_predictor.training and agent.soda_target.training  # batch statistics, as the original


def test_without_its_aux_step_the_update_is_rads(monkeypatch):
    """soda.update on a step without SODA's batch is sac_baseline.update --augmentation crop: same weights, same crops,
    same noise -> the same losses and weights (the two files' update code is the same method)."""
    torch.manual_seed(0)
    args = tiny_args()
    rad_args = sac_baseline.Args(**TINY, augmentation="crop", cuda=False)
    ours, rad = make_agent(args), sac_baseline.make_agent((9, 32, 32), 2, rad_args, torch.device("cpu"))
    for name in ("critic", "critic_target", "actor"):
        getattr(rad, name).load_state_dict(getattr(ours, name).state_dict())
    batch = (frames(16), torch.rand(16, 2) * 2 - 1, torch.rand(16, 1), frames(16), torch.ones(16, 1))
    for step in (1, 2):
        torch.manual_seed(step)
        mine = soda.update(ours, batch, step, args, -2.0)
        torch.manual_seed(step)
        theirs = sac_baseline.update(rad, batch, step, rad_args, -2.0)
        assert mine.keys() == theirs.keys() and "losses/soda_loss" not in mine
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    for a, b in zip(ours.critic.parameters(), rad.critic.parameters()):
        assert torch.equal(a, b)


def test_update_makes_the_aux_step_only_when_given_sodas_batch():
    torch.manual_seed(0)
    args = tiny_args()
    agent = make_agent(args)
    batch = (frames(16), torch.rand(16, 2) * 2 - 1, torch.rand(16, 1), frames(16), torch.ones(16, 1))
    target = [p.clone() for p in agent.soda_target.parameters()]
    assert "losses/soda_loss" not in soda.update(agent, batch, 1, args, -2.0)
    assert all(torch.equal(a, b) for a, b in zip(target, agent.soda_target.parameters()))
    metrics = soda.update(agent, batch, 2, args, -2.0, frames(6), torch.rand(6, 3, 32, 32) * 255)
    assert metrics["losses/soda_loss"].item() > 0 and "losses/actor_loss" in metrics
    assert not all(torch.equal(a, b) for a, b in zip(target, agent.soda_target.parameters()))


def test_soda_trains_end_to_end_and_resumes(toy_envs, capsys):
    """A short run renders 16 px larger, draws soda_batch_size overlay images on each aux step (every 2nd step, and
    every update of the first burst, whose step is even), logs its loss; its checkpoint holds SODA's parts, evaluates
    and resumes."""
    args = tiny_args(
        env_id="toy-reach", total_timesteps=60, learning_starts=40, eval_freq=60, eval_episodes=1,
        eval_modes=("train",), log_freq=10, save_buffer=True, buffer_size=200,
    )  # fmt: skip
    drawn = []
    real_sample = soda.envs.OverlayImages.sample
    soda.envs.OverlayImages.sample = lambda self, n: drawn.append(n) or real_sample(self, n)
    try:
        run_dir = soda.main(args)
    finally:
        soda.envs.OverlayImages.sample = real_sample
    assert drawn == [6] * (40 + 9)  # the burst of 40 at step 40, then steps 42, 44, ..., 58
    out = capsys.readouterr().out
    assert f"frames: rendered at {RENDERED} px, random 32-px crops when updating, the centre when acting" in out
    assert "losses/soda_loss" in read_scalars(run_dir)
    checkpoint = os.path.join(run_dir, "checkpoint.pt")
    state = torch.load(checkpoint, weights_only=False)
    assert {"soda_predictor", "soda_target", "soda_optimizer"} <= set(state["agent"])
    assert state["buffer"]["frames"].shape[-1] == RENDERED
    returns = soda.main(tiny_args(env_id="toy-reach", eval_checkpoint=checkpoint, eval_episodes=2, eval_modes=("train",)))
    assert len(returns["train"]) == 2
    assert soda.main(tiny_args(resume=checkpoint, total_timesteps=70)) == run_dir
    resumed = torch.load(checkpoint, weights_only=False)
    assert resumed["step"] == 70
    moved = resumed["agent"]["soda_target"]["projection.0.weight"] - state["agent"]["soda_target"]["projection.0.weight"]
    assert moved.abs().max() > 0  # SODA's target went on moving from the checkpoint's


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--soda-batch-size", "1"], "--soda-batch-size 1: must be at least 2 (SODA's batch norms)"),
        (["--soda-tau", "0"], "--soda-tau 0.0: must be in (0, 1]"),
        (["--aux-update-freq", "-1"], "--aux-update-freq -1: must be 0 (off) or more"),
        (["--overlay-dir", "/no/such/folder"], "--overlay-dir /no/such/folder: no such folder"),
        (["--augmentation", "shift"], "invalid choice 'shift' for argument '--augmentation'"),
        (["--shift-copies", "2"], "unrecognized --shift-copies"),
    ],
)
def test_cli_bad_input_is_one_line(flags, message, tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "soda.py"), *flags], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr


def test_rads_checkpoint_is_not_sodas(toy_envs):
    args = sac_baseline.Args(
        **TINY, env_id="toy-reach", augmentation="crop", total_timesteps=20, learning_starts=10, eval_freq=20,
        eval_episodes=1, eval_modes=("train",), cuda=False,
    )  # fmt: skip
    run_dir = sac_baseline.main(args)
    with pytest.raises(soda.envs.ConfigError, match="written by sac_baseline.py, not soda.py"):
        soda.main(dataclasses.replace(tiny_args(), eval_checkpoint=os.path.join(run_dir, "checkpoint.pt")))
