"""Plain test helpers (the fixtures are in conftest.py): the repository root, tiny network sizes, event-file reading."""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Small enough for a CPU test, same structure as the paper's networks.
TINY = dict(num_conv_layers=2, num_filters=8, projection_dim=16, hidden_dim=32, image_size=32, batch_size=16)


def read_scalars(run_dir):
    """{tag: [(step, value), ...]} from a run's TensorBoard event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
