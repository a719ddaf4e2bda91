"""Shared test helpers: the toy pixel task in place of DMC, tiny network sizes, event-file reading."""

import os

import pytest

import envs
import toy_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Small enough for a CPU test, same structure as the paper's networks.
TINY = dict(num_conv_layers=2, num_filters=8, projection_dim=16, hidden_dim=32, image_size=32, batch_size=16)


@pytest.fixture
def toy_envs(monkeypatch, tmp_path):
    """Route envs.make_env to the toy task and run in a temporary folder (runs/ lands there)."""
    monkeypatch.setattr(envs, "make_env", toy_task.make_toy_env)
    monkeypatch.setattr(envs, "default_action_repeat", lambda env_id: 1)
    monkeypatch.setattr(envs, "check_args", lambda env_id, mode, **kwargs: toy_task.check_args(env_id, mode))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def read_scalars(run_dir):
    """{tag: [(step, value), ...]} from a run's TensorBoard event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
