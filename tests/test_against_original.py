"""benchmarks/against_original.py without the original (CI has none): its --src errors, its comparison
of two updates fed the same draws, and its verdict."""

import dataclasses
import importlib.util
import os
import subprocess
import sys

import pytest
import torch
from common import TINY

import sac_baseline
import sgqn
import soda

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "against_original.py")
spec = importlib.util.spec_from_file_location("against_original", SCRIPT)
against = importlib.util.module_from_spec(spec)
spec.loader.exec_module(against)


@pytest.mark.parametrize(
    "folder, message", [("missing", "no such folder"), ("", "no algorithms/sgsac.py in it (give SuReLI/SGQN's DMC/src)")]
)
def test_a_missing_or_wrong_src_is_a_one_line_error_naming_it(tmp_path, folder, message):
    src = str(tmp_path / folder)
    result = subprocess.run([sys.executable, SCRIPT, "--src", src], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: --src {src}: {message}"]
    assert result.stdout == ""


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def test_served_draws_make_the_update_reproducible_and_a_changed_tau_diverges_at_the_first_target_update(float64):
    """Three of our agents with the same weights on the same served draws (every random draw of the
    update is served: an unserved one would come from the global RNG, different for each): two agree
    exactly; the one with encoder tau 0.049 first differs in the target conv stack at step 2, the first
    target update, and the verdict names it with exit status 1."""
    torch.manual_seed(0)
    args = sgqn.Args(**TINY, sgqn_quantile=0.9, cuda=False)
    changed = dataclasses.replace(args, encoder_tau=0.049)
    obs_shape = (9, args.image_size, args.image_size)
    agents = [sgqn.make_agent(obs_shape, against.ACTION_DIM, a, torch.device("cpu")) for a in (args, args, changed)]
    reference, *others = [against.our_parameters(agent) for agent in agents]
    pairs = [{name: (reference[name], other[name]) for name in reference} for other in others]
    for parameters in pairs:
        against.copy_weights(parameters)
    same, diverged = [], []
    for step, d in enumerate(against.draws(4, args.batch_size, obs_shape), 1):
        first, again, perturbed = (against.update_ours(agent, a, d, step) for agent, a in zip(agents, (args, args, changed)))
        assert len(first[1]) == (2 if step % 2 == 0 else 1)  # the attribution predictor's mask on aux steps only
        same.append(against.differences(first, again, pairs[0]))
        diverged.append(against.differences(first, perturbed, pairs[1]))
    assert set(same[0]) == {"q loss", *reference, "mask px"}
    assert set(same[1]) == {*against.LOSSES, *reference, *against.MASKS}
    assert all(value == 0 for row in same for value in row.values())
    assert against.summary(same, 1e-8) == (
        "largest difference: 0.0e+00 (q loss, update 1); 0 mask pixels differ; all within 1e-08: the same update",
        0,
    )

    assert all(value == 0 for value in diverged[0].values())
    assert against.first_divergence(diverged, 1e-8)[:2] == (2, "target conv")
    line, status = against.summary(diverged, 1e-8)
    assert status == 1 and "; first divergence: target conv at update 2 (" in line


def test_any_differing_mask_pixel_is_a_divergence_whatever_the_threshold():
    rows = [{"q loss": 0.0, "conv": 1e-12, "mask px": 0}, {"q loss": 1e-9, "conv": 1e-3, "mask px": 0, "aux mask px": 2}]
    assert against.first_divergence(rows, 1e-2) == (2, "aux mask px", 2)
    assert against.first_divergence(rows, 1e-4) == (2, "conv", 1e-3)
    line, status = against.summary(rows, 1e-2)
    assert status == 1 and line == (
        "largest difference: 1.0e-03 (conv, update 2); 2 mask pixels differ; "
        "first divergence: aux mask px at update 2 (2 pixels)"
    )
    assert against.summary(rows[:1], 1e-8) == (
        "largest difference: 1.0e-12 (conv, update 1); 0 mask pixels differ; all within 1e-08: the same update",
        0,
    )


def test_relative_difference_is_the_largest_gap_over_the_largest_value():
    theirs = [torch.tensor([2.0, -4.0]), torch.tensor([1.0])]
    ours = [torch.tensor([2.0, -4.5]), torch.tensor([2.0])]
    assert against.relative_difference(ours, theirs) == 1.0 / 4.0
    assert against.relative_difference([torch.tensor([0.5])], [torch.zeros(1)]) == 0.5  # theirs all zero: absolute


def test_svea_side_served_draws_reproduce_and_a_changed_critic_beta1_diverges(float64):
    """--algorithm svea: our SVEA update (sac_baseline.py) on served draws (shifts, policy noise, overlay
    images): two agents with the same weights agree exactly, rows with no mask columns; one whose critic
    Adam beta1 is 0.9001 diverges at the second update (Adam's first step does not depend on beta1),
    first seen in the actor loss, which reads the critic after that update's step."""
    torch.manual_seed(0)
    args = sac_baseline.Args(**TINY, augmentation="svea", cuda=False)
    obs_shape = (9, args.image_size, args.image_size)
    agents = [sac_baseline.make_agent(obs_shape, against.ACTION_DIM, args, torch.device("cpu")) for _ in range(3)]
    agents[2].critic_optimizer.param_groups[0]["betas"] = (against.BETA1, 0.999)
    reference, *others = [against.our_parameters(agent) for agent in agents]
    assert "decoder" not in reference
    pairs = [{name: (reference[name], other[name]) for name in reference} for other in others]
    for parameters in pairs:
        against.copy_weights(parameters)
    same, diverged = [], []
    for step, d in enumerate(against.draws(4, args.batch_size, obs_shape), 1):
        first, again, perturbed = (against.update_ours(agent, args, d, step) for agent in agents)
        assert first[1] == []  # no mask
        same.append(against.differences(first, again, pairs[0]))
        diverged.append(against.differences(first, perturbed, pairs[1]))
    assert set(same[0]) == {"q loss", *reference} and set(same[1]) == {*against.SVEA_LOSSES, *reference}
    assert all(value == 0 for row in same for value in row.values())
    assert against.summary(same, 1e-8) == (
        "largest difference: 0.0e+00 (q loss, update 1); all within 1e-08: the same update",
        0,
    )
    assert against.first_divergence(diverged, 1e-8)[:2] == (2, "actor loss")
    assert diverged[1]["conv"] > 1e-8 and max(diverged[0].values()) < 1e-12  # rounding alone at the first


@pytest.mark.parametrize("algorithm", ["rad", "soda"])
def test_rad_and_soda_sides_served_crops_reproduce_and_a_changed_tau_diverges(float64, algorithm):
    """--algorithm rad|soda: our update on served draws (the batch's random crops of 100-px frames, SODA's two crops
    of its own frames and its overlay images, policy noise): two agents with the same weights agree exactly, with
    SODA's aux loss and predictor groups on its aux steps only; one with another tau diverges at the first step that
    uses it (RAD: the target conv stack at update 2; SODA: its moving-average target, soda_tau, at update 2)."""
    torch.manual_seed(0)
    rendered = (9, TINY["image_size"] + 16, TINY["image_size"] + 16)
    if algorithm == "rad":
        args = sac_baseline.Args(**TINY, augmentation="crop", cuda=False)
        changed, make_agent = dataclasses.replace(args, encoder_tau=0.049), sac_baseline.make_agent
    else:
        args = soda.Args(**TINY, soda_batch_size=6, cuda=False)
        changed, make_agent = dataclasses.replace(args, soda_tau=0.0049), soda.make_agent
    obs_shape = (9, args.image_size, args.image_size)
    agents = [make_agent(obs_shape, against.ACTION_DIM, a, torch.device("cpu")) for a in (args, args, changed)]
    reference, *others = [against.our_parameters(agent) for agent in agents]
    assert ("predictor" in reference) == (algorithm == "soda") and "decoder" not in reference
    pairs = [{name: (reference[name], other[name]) for name in reference} for other in others]
    for parameters in pairs:
        against.copy_weights(parameters)
    same, diverged = [], []
    soda_batch = args.soda_batch_size if algorithm == "soda" else 0
    draws = against.draws(4, args.batch_size, rendered, crop_to=args.image_size, soda_batch=soda_batch)
    for step, d in enumerate(draws, 1):
        assert d.batch[0].shape[-1] == rendered[-1] and d.shifted[0].shape[-1] == args.image_size
        first, again, perturbed = (against.update_ours(agent, a, d, step) for agent, a in zip(agents, (args, args, changed)))
        same.append(against.differences(first, again, pairs[0]))
        diverged.append(against.differences(first, perturbed, pairs[1]))
    losses = against.ALGORITHM_LOSSES[algorithm]
    assert set(same[0]) == {"q loss", *reference} and set(same[1]) == {*losses, *reference}
    assert ("aux loss" in same[1]) == (algorithm == "soda") and "aux loss" not in same[0]
    assert all(value == 0 for row in same for value in row.values())
    expected = "target conv" if algorithm == "rad" else "predictor target"
    assert against.first_divergence(diverged, 1e-8)[:2] == (2, expected)


def test_our_random_crop_draws_every_window_and_the_centre_crop_is_their_middle():
    """RAD's crop (the comparison serves its crops, so its offsets are tested here): each crop is a window of the
    frame, offsets 0..16 at 100 -> 84, both ends included (the original's stop at 15), the centre (8) their middle."""
    torch.manual_seed(0)
    frames = torch.arange(100 * 100, dtype=torch.float64).view(1, 1, 100, 100).repeat(2000, 3, 1, 1)
    crops = sac_baseline.random_crop(frames, 84)
    top, left = (crops[:, 0, 0, 0] // 100).long(), (crops[:, 0, 0, 0] % 100).long()
    assert set(top.tolist()) == set(left.tolist()) == set(range(17))
    windows = torch.stack([frames[i, :, y : y + 84, x : x + 84] for i, (y, x) in enumerate(zip(top.tolist(), left.tolist()))])
    assert torch.equal(crops, windows)
    assert torch.equal(sac_baseline.center_crop(frames[:1], 84), frames[:1, :, 8:92, 8:92])
    assert abs(top.double().mean().item() - 8) < 0.3 and abs(left.double().mean().item() - 8) < 0.3
