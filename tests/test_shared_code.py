"""The two scripts repeat their common code on purpose (each reads alone): hold it identical."""

import dataclasses
import difflib
import inspect
import os
import subprocess
import sys

import pytest

import sac_baseline as sac
import sgqn

SHARED = [
    "weight_init", "ConvStack", "conv_output_size", "projection", "mlp", "Critic", "Actor",
    "squashed_gaussian_log_prob", "ReplayBuffer", "random_shift", "td_target", "update_actor_and_alpha",
    "soft_update", "update_target", "policy_action", "evaluate", "write_video", "results_table",
    "shifted_copies", "save_checkpoint", "load_checkpoint", "restore", "as_flag", "merged_args", "checked_args", "read_args", "write_json",
    "open_evaluations", "write_evaluation", "Interrupted", "stop_signals", "duration", "progress_line", "describe_start",
    "buffer_capacity", "keep_freed_memory", "make_eval_envs",
]


@pytest.mark.parametrize("name", SHARED)
def test_repeated_code_is_identical(name):
    assert inspect.getsource(getattr(sac, name)) == inspect.getsource(getattr(sgqn, name))


def test_shared_constants_and_arguments():
    for name in ("LOG_STD_MIN", "LOG_STD_MAX", "QUIET_SECONDS", "POSITIVE", "EVALUATION_COLUMNS"):
        assert getattr(sac, name) == getattr(sgqn, name), name
    assert sgqn.RESUMABLE == (*sac.RESUMABLE, "overlay_dir")
    sac_fields = {f.name: f for f in dataclasses.fields(sac.Args)}
    sgqn_fields = {f.name: f for f in dataclasses.fields(sgqn.Args)}
    assert set(sac_fields) <= set(sgqn_fields)
    differ = {name for name in sac_fields if sac_fields[name].default != sgqn_fields[name].default}
    assert differ == {"exp_name", "augmentation"}  # SGQN is built on DrQ's shift


def test_training_loops_differ_only_by_sgqn_lines():
    """main() of sgqn.py is main() of sac_baseline.py plus lines; none of the baseline's is changed."""
    sac_lines = inspect.getsource(sac.main).splitlines()
    matcher = difflib.SequenceMatcher(None, sac_lines, inspect.getsource(sgqn.main).splitlines(), autojunk=False)
    changed = [line.strip() for op, i1, i2, _, _ in matcher.get_opcodes() if op in ("replace", "delete") for line in sac_lines[i1:i2]]
    assert changed == [
        "returns, _ = evaluate(agent, eval_envs, args.eval_modes, args.eval_episodes, device, video_dir, global_step, stop)",
        "metrics |= update(agent, buffer.sample(args.batch_size), global_step, args, target_entropy)"]


FAULT_PROBE = """
import resource, sys, torch
import sac_baseline
kept = sac_baseline.keep_freed_memory() if sys.argv[1] == "keep" else None
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
    out = subprocess.run([sys.executable, "-c", FAULT_PROBE, mode], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).stdout.split()
    pages_per_block = 64 * 2**20 // 4096
    if mode == "keep":
        assert out[0] == "True"
        assert int(out[1]) < pages_per_block
    else:
        assert int(out[1]) > 5 * pages_per_block
