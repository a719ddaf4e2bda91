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


def read_wandb_records(path):
    """The records (wandb_internal_pb2.Record) of a W&B run file (`run-{id}.wandb`, what an offline run
    writes): a LevelDB log (a 7-byte file header, then 32 KiB blocks of chunks, each with a 7-byte
    header: checksum, length, type FULL 1 / FIRST 2 / MIDDLE 3 / LAST 4), a serialized Record per entry."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data, records, position, pieces = open(path, "rb").read(), [], 7, b""
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:  # a block's tail too short for a chunk header is padding
            position += 32768 - position % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        chunk, position = data[position + 7 : position + 7 + length], position + 7 + length
        pieces = chunk if kind in (1, 2) else pieces + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            records.append(record)
    return records
