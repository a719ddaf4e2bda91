"""Shared fixtures, and the repository root on sys.path (`import envs`, `import sgqn`) however pytest is started."""

import os
import sys

import pytest
import torch

# Under pytest-xdist (`-n 2`) the test processes share the cores: each one's torch takes its share
# of the threads, not all of them (oversubscribed OpenMP threads spin against each other).
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import toy_task  # noqa: E402

import envs  # noqa: E402


@pytest.fixture
def toy_envs(monkeypatch, tmp_path):
    """Route envs.make_env to the toy task and run in a temporary folder (runs/ lands there)."""
    monkeypatch.setattr(envs, "make_env", toy_task.make_toy_env)
    monkeypatch.setattr(envs, "default_action_repeat", lambda env_id: 1)
    monkeypatch.setattr(envs, "check_args", lambda env_id, mode, **kwargs: toy_task.check_args(env_id, mode))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(autouse=True)
def environment_unchanged():
    """A test that leaves one of these variables changed fails itself, not a later test in the same worker
    (which test runs next depends on pytest-xdist's scheduling): the scripts' subprocesses inherit them, and a
    stray MUJOCO_EGL_DEVICE_ID once sent CI's sac_baseline CLI tests to an EGL device that does not exist here.
    The variables the project's code writes or its runs depend on; libraries set others of their own on import."""
    watched = ("MUJOCO_GL", "MUJOCO_EGL_DEVICE_ID", "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")
    before = {name: os.environ.get(name) for name in watched}
    yield
    changed = [name for name in watched if os.environ.get(name) != before[name]]
    assert not changed, f"the test left os.environ changed: {changed}"
