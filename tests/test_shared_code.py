"""The three scripts repeat their common code on purpose (each reads alone): hold it identical. Their run
plumbing is one module, run_plumbing.py, which imports no script; the scripts never import each other."""

import ast
import dataclasses
import difflib
import inspect
import os
import subprocess
import sys

import pytest
import torch

import run_plumbing
import sac_baseline as sac
import sgqn
import soda

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = [
    "weight_init", "ConvStack", "center_crop", "conv_output_size", "check_network_args", "projection", "mlp", "Critic", "Actor",
    "squashed_gaussian_log_prob", "ReplayBuffer", "random_shift", "shifted_copies", "random_overlay", "td_target",
    "update_actor_and_alpha", "soft_update", "update_target", "policy_action", "evaluate",
    "saliency_mask", "domain_quantile", "saliency_on_agent",
]  # fmt: skip


SODA_LACKS = {"random_shift", "shifted_copies"}  # SODA's RL losses see RAD's crops only
SHARED_WITH_SODA = [*(name for name in SHARED if name not in SODA_LACKS), "random_crop", "video_frames"]


@pytest.mark.parametrize("name", SHARED)
def test_repeated_code_is_identical(name):
    assert inspect.getsource(getattr(sac, name)) == inspect.getsource(getattr(sgqn, name))


@pytest.mark.parametrize("name", SHARED_WITH_SODA)
def test_soda_repeats_the_baselines_code(name):
    assert inspect.getsource(getattr(sac, name)) == inspect.getsource(getattr(soda, name))
    assert not any(hasattr(soda, lacking) for lacking in SODA_LACKS)


def test_soda_arguments_are_the_baselines_but_its_own_and_its_augmentation_is_rads():
    sac_fields = {f.name: f for f in dataclasses.fields(sac.Args)}
    soda_fields = {f.name: f for f in dataclasses.fields(soda.Args)}
    assert set(sac_fields) - set(soda_fields) == {"svea_alpha", "svea_beta", "shift_copies"}
    assert set(soda_fields) - set(sac_fields) == {"aux_update_freq", "aux_lr", "aux_beta", "soda_batch_size", "soda_tau"}
    differ = {name for name in soda_fields.keys() & sac_fields.keys() if sac_fields[name].default != soda_fields[name].default}
    assert differ == {"exp_name", "augmentation"} and soda.Args().augmentation == "crop"
    assert soda.SCRIPT == run_plumbing.Script(
        "soda", soda.Args, (*run_plumbing.RESUMABLE, "overlay_dir"), (soda.check_network_args, soda.check_soda_args)
    )
    # The original's names and defaults (DMC-GB's arguments.py: aux_lr, aux_beta, aux_update_freq, soda_*).
    assert (soda.Args.aux_lr, soda.Args.aux_beta, soda.Args.aux_update_freq) == (3e-4, 0.9, 2)
    assert (soda.Args.soda_batch_size, soda.Args.soda_tau) == (256, 0.005)


def test_sodas_training_loop_is_the_baselines_with_its_own_batch_and_overlays():
    """main() of soda.py is main() of sac_baseline.py but for SODA's overlay source and its batch of frames."""
    sac_lines = inspect.getsource(sac.main).splitlines()
    matcher = difflib.SequenceMatcher(None, sac_lines, inspect.getsource(soda.main).splitlines(), autojunk=False)
    changed = [
        line.strip() for op, i1, i2, _, _ in matcher.get_opcodes() if op in ("replace", "delete") for line in sac_lines[i1:i2]
    ]
    assert changed == [
        'overlay = envs.OverlayImages(args.overlay_dir, args.image_size, overlay_seed) if args.augmentation == "svea" else None',
        "rows = args.batch_size * args.shift_copies",
        "images = overlay.sample_on(rows, device) if overlay else None  # made on the device",
        "metrics |= update(agent, buffer.sample(args.batch_size), global_step, args, target_entropy, images)",
    ]


def test_shared_constants_and_arguments():
    for name in ("LOG_STD_MIN", "LOG_STD_MAX", "SALIENCY_EVERY"):
        assert getattr(sac, name) == getattr(sgqn, name), name
    checks = (sac.check_network_args, sac.check_svea_args)
    assert sac.SCRIPT == run_plumbing.Script("sac_baseline", sac.Args, (*run_plumbing.RESUMABLE, "overlay_dir"), checks)
    assert sgqn.SCRIPT.resumable == (*run_plumbing.RESUMABLE, "overlay_dir")
    assert sgqn.SCRIPT.checks == (sgqn.check_network_args, sgqn.check_sgqn_args)
    sac_fields = {f.name: f for f in dataclasses.fields(sac.Args)}
    sgqn_fields = {f.name: f for f in dataclasses.fields(sgqn.Args)}
    assert set(sac_fields) - set(sgqn_fields) == {"svea_alpha", "svea_beta"}  # SVEA's weights
    assert sac_fields["overlay_dir"].type == sgqn_fields["overlay_dir"].type
    differ = {name for name in sgqn_fields.keys() & sac_fields.keys() if sac_fields[name].default != sgqn_fields[name].default}
    assert differ == {"exp_name", "augmentation"}  # SGQN is built on DrQ's shift


def test_training_loops_differ_only_by_sgqn_lines():
    """main() of sgqn.py is main() of sac_baseline.py plus lines; of the baseline's, only the evaluation's
    quantile and SVEA's overlay lines are changed (SGQN draws its overlay images on its attribution steps)."""
    sac_lines = inspect.getsource(sac.main).splitlines()
    matcher = difflib.SequenceMatcher(None, sac_lines, inspect.getsource(sgqn.main).splitlines(), autojunk=False)
    changed = [
        line.strip() for op, i1, i2, _, _ in matcher.get_opcodes() if op in ("replace", "delete") for line in sac_lines[i1:i2]
    ]
    assert changed == [
        "returns, _, saliency = evaluate(agent, eval_envs, args, device, domain_quantile(args.env_id), stop=stop)",
        'overlay = envs.OverlayImages(args.overlay_dir, args.image_size, overlay_seed) if args.augmentation == "svea" else None',
        "returns, _, saliency = evaluate(",
        "agent, eval_envs, args, device, domain_quantile(args.env_id), run.video_dir, global_step, stop",
        "rows = args.batch_size * args.shift_copies",
        "images = overlay.sample_on(rows, device) if overlay else None  # made on the device",
    ]


def test_the_baselines_guided_backprop_is_sgqns():
    """sac_baseline.py's guided_backprop (for measuring where its critic looks) is sgqn.py's without
    the Q values that SGQN's critic loss reuses: the same attribution, and no parameter gradient."""
    torch.manual_seed(0)
    critic = sgqn.Critic((9, 32, 32), 2, num_conv_layers=2, num_filters=8, projection_dim=16, hidden_dim=32)
    obs, action = torch.rand(4, 9, 32, 32) * 255, torch.rand(4, 2) * 2 - 1
    ours = sac.guided_backprop(critic, obs, action)
    assert torch.equal(ours, sgqn.guided_backprop(critic, obs, action))
    assert ours.abs().sum() > 0 and all(p.grad is None for p in critic.parameters())
    plain = torch.autograd.grad(critic(obs.requires_grad_(True), action)[0].sum(), obs)[0]
    assert not torch.allclose(ours, plain)  # the ReLU clamps change it: not the plain gradient


def imported_modules(path):
    tree = ast.parse(open(os.path.join(ROOT, path)).read())
    names = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    return {name.split(".")[0] for name in names} | {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    }


def test_the_scripts_and_their_plumbing_import_each_other_only_one_way():
    scripts = {"sgqn", "sac_baseline", "soda"}
    assert not scripts & imported_modules("run_plumbing.py")
    for script in scripts:
        assert not scripts & imported_modules(f"{script}.py")
        assert {"envs", "run_plumbing"} <= imported_modules(f"{script}.py")
    # The plumbing is reached through run_plumbing, not through a script (no second copy of it there).
    assert not {"save_checkpoint", "checked_args", "Interrupted", "make_eval_envs", "keep_freed_memory"} & set(vars(sgqn))


FAULT_PROBE = """
import resource, sys, torch
import run_plumbing
kept = run_plumbing.keep_freed_memory() if sys.argv[1] == "keep" else None
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for i in range(12):
    if i == 6:
        start = faults()
    torch.ones(64 * 2**20 // 4).sum()  # a 64 MiB activation, allocated, touched and freed
print(kept, faults() - start)
"""


@pytest.mark.parametrize("mode", ["keep", "default"])
def test_keep_freed_memory_stops_page_faults_on_reallocation(mode):
    """After keep_freed_memory(), a freed 64 MiB block is reused: once the heap has grown, six
    reallocations cost (almost) no fresh zeroed pages. With glibc's defaults each one faults all
    16k pages in again."""
    out = subprocess.run(
        [sys.executable, "-c", FAULT_PROBE, mode], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout.split()
    pages_per_block = 64 * 2**20 // 4096
    if mode == "keep":
        assert out[0] == "True"
        assert int(out[1]) < pages_per_block
    else:
        assert int(out[1]) > 5 * pages_per_block


LINE_BUDGETS = {"sgqn.py": 900, "sac_baseline.py": 800, "soda.py": 800}  # a student reads a script in one sitting


@pytest.mark.parametrize("script", LINE_BUDGETS)
def test_the_scripts_keep_their_line_budgets(script):
    """What belongs to an env family or to the run lives in envs/ or run_plumbing.py: each script within its budget,
    and its training loop, main(), within 90 lines."""
    with open(os.path.join(ROOT, script)) as f:
        assert len(f.read().splitlines()) <= LINE_BUDGETS[script]
    module = {"sgqn.py": sgqn, "sac_baseline.py": sac, "soda.py": soda}[script]
    assert len(inspect.getsource(module.main).splitlines()) <= 90
