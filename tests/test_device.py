"""The GPU paths, on a CPU (issue 48): what only a GPU would show, made to show here.

- Checkpoints carry the CUDA RNG state of the run's own GPU, so one written where 2 GPUs were visible
  resumes where 1 is (torch.cuda's RNG calls emulated, as they behave on such a host).
- A local sweep hands its jobs the GPUs its launcher was given (CUDA_VISIBLE_DEVICES=2,3: jobs on 2 and
  3), and each run renders with EGL on the GPU it trains on (MUJOCO_EGL_DEVICE_ID).
- One update of each script makes no host sync: no op that makes a GPU wait for the host or the host
  for the GPU (`.item()`, `bool(tensor)`, a tensor built from host data, an op whose output size depends
  on the data), recorded by a TorchDispatchMode around the update, the batch made before.
- One update of each script places every tensor on its input's device: run on the meta device, where
  an op that mixes it with a CPU tensor, or reads a value on the host, raises.
"""

import contextlib
import os
import subprocess
import sys
from collections import Counter
from unittest import mock

import numpy as np
import pytest
import torch
from common import ROOT, TINY
from test_sweep import ENV, SWEEP, sweep_module
from torch.utils._python_dispatch import TorchDispatchMode

import envs
import run_plumbing
import sac_baseline as sac
import sgqn
import soda

# The emulated device is torch's meta device: tensors with shapes and no data, on which an op that mixes them
# with CPU tensors raises. What would make a GPU and its host wait for each other is recorded when it touches a
# meta tensor: a value read back (.item(), bool()), an output size that depends on the data, a copy between
# host and device. PyTorch's own host-side scalars (Adam's step counts, numbers) are CPU tensors: not syncs.
DEVICE = torch.device("meta")
SYNC_OPS = {
    "aten._local_scalar_dense.default": "a value read on the host (.item(), bool(), float())",
    "aten.is_nonzero.default": "bool() of a tensor",
    "aten.equal.default": "torch.equal: a host bool",
    "aten.nonzero.default": "nonzero: its size depends on the data",
    "aten.masked_select.default": "masked_select: its size depends on the data",
    "aten.unique_dim.default": "unique: its size depends on the data",
    "aten._unique2.default": "unique: its size depends on the data",
}
COPY_OPS = ("aten._to_copy.default", "aten.copy_.default")


def tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors(item)


class HostSyncs(TorchDispatchMode):
    """Counts, by op and by the caller's file and line in this repository, the ops that would sync a GPU
    with its host (SYNC_OPS on a device tensor, a copy between host and device); a read value is given
    as 0 so that counting goes on."""

    def __init__(self):
        super().__init__()
        self.found = Counter()
        self.patches = contextlib.ExitStack()

    def __enter__(self):
        # A tensor made on the device from host data (a list, a number array) is copied below the dispatcher:
        # the constructors are watched instead.
        for owner, name in ((torch, "tensor"), (torch, "as_tensor"), (torch.Tensor, "new_tensor")):
            self.patches.enter_context(mock.patch.object(owner, name, self.watched(getattr(owner, name), name)))
        return super().__enter__()

    def __exit__(self, *exc):
        self.patches.close()
        return super().__exit__(*exc)

    def watched(self, constructor, name):
        def make(*args, **kwargs):
            made = constructor(*args, **kwargs)
            data = args[1] if name == "new_tensor" else args[0]
            if made.device.type == DEVICE.type and not isinstance(data, torch.Tensor):
                self.record(f"{name} from host data", depth=1)
            return made

        return make

    def record(self, what, depth=2):
        frame = sys._getframe(depth)
        while frame and (not frame.f_code.co_filename.startswith(ROOT) or "/.venv/" in frame.f_code.co_filename):
            frame = frame.f_back
        where = f"{os.path.relpath(frame.f_code.co_filename, ROOT)}:{frame.f_lineno}" if frame else "?"
        self.found[f"{what} at {where}"] += 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        devices = {t.device.type for t in tensors((args, kwargs))}
        name = str(func)
        if name in SYNC_OPS and DEVICE.type in devices:
            self.record(name)
            if name in ("aten._local_scalar_dense.default", "aten.is_nonzero.default", "aten.equal.default"):
                return 0
        if name in COPY_OPS:
            source = args[0] if name == "aten._to_copy.default" else args[1]
            target = kwargs.get("device", source.device) if name == "aten._to_copy.default" else args[0].device
            if {source.device.type, torch.device(target).type} == {"cpu", DEVICE.type} and source.dim() > 0:
                self.record(f"copy {source.device.type} -> {torch.device(target).type}")
        return func(*args, **kwargs)


def agent_and_batch(module, device, **changes):
    """The agent, its args, a batch of stacked frames as the replay buffer gives them (RAD's and SODA's rendered
    16 px larger, which the update crops) and an overlay image per sample."""
    args = module.Args(**{**TINY, **changes}, cuda=False)
    obs_shape = (9, args.image_size, args.image_size)
    agent = module.make_agent(obs_shape, 2, args, device)
    b, size, frame = args.batch_size, args.image_size, run_plumbing.render_size(args)
    batch = (
        torch.randint(0, 256, (b, 9, frame, frame), device=device).float(),
        torch.rand(b, 2, device=device) * 2 - 1,
        torch.rand(b, 1, device=device),
        torch.randint(0, 256, (b, 9, frame, frame), device=device).float(),
        torch.ones(b, 1, device=device),
    )
    images = torch.randint(0, 256, (b, 3, size, size), device=device).float()
    return agent, args, batch, images


def soda_aux_inputs(args, device):
    """SODA's own batch of an auxiliary step, as main() makes it: soda_batch_size uncropped stacked frames (the
    obs of buffer.sample) and an overlay image for each."""
    n, size, frame = args.soda_batch_size, args.image_size, run_plumbing.render_size(args)
    obs = torch.randint(0, 256, (n, 9, frame, frame), device=device).float()
    return obs, torch.randint(0, 256, (n, 3, size, size), device=device).float()


UPDATES = {
    "sac": (sac, {}),
    "rad": (sac, {"augmentation": "crop"}),
    "soda": (soda, {"soda_batch_size": 8}),
    "svea": (sac, {"augmentation": "svea"}),
    "sgqn": (sgqn, {"sgqn_quantile": 0.9}),
    "drq": (sac, {"augmentation": "shift"}),
}


@pytest.mark.parametrize("method", UPDATES)
def test_an_update_stays_on_the_device_and_makes_no_host_sync(method):
    """A critic-only (odd) and a full (even: actor, target, SGQN's attribution predictor, SODA's auxiliary step on
    its own batch) step on the emulated device, the batches made before: no op mixes devices (it would raise), none
    syncs (RAD's and SODA's random crops included), and the outputs, the networks and the optimisers' moments stay
    on the device (Adam's step counts are host scalars by design)."""
    module, changes = UPDATES[method]
    agent, args, batch, images = agent_and_batch(module, DEVICE, **changes)
    for step in (1, 2):
        if method == "soda":
            aux_step = step % args.aux_update_freq == 0
            extra = soda_aux_inputs(args, DEVICE) if aux_step else ()
        else:
            extra = [images] if method in ("svea", "sgqn") else []
        with HostSyncs() as syncs:
            metrics = module.update(agent, batch, step, args, -2.0, *extra)
        assert dict(syncs.found) == {}, f"step {step}: {dict(syncs.found)}"
        assert {v.device for v in metrics.values()} == {DEVICE}, step  # logged later, when the caller syncs
        if method == "soda":  # both kinds of step were made
            assert ("losses/soda_loss" in metrics) == aux_step, step
    optimizers = [agent.critic_optimizer, agent.actor_optimizer, agent.alpha_optimizer]
    optimizers += [agent.soda_optimizer] if method == "soda" else []
    for optimizer in optimizers:
        moments = [t for s in optimizer.state.values() for k, t in s.items() if k != "step"]
        assert moments and {t.device for t in moments} == {DEVICE}
    assert {p.device for p in agent.critic.parameters()} == {DEVICE}
    if method == "soda":  # its predictor's new layers and its moving-average target, batch-norm statistics included
        parts = (agent.soda_predictor, agent.soda_target)
        assert {t.device for part in parts for t in (*part.parameters(), *part.buffers())} == {DEVICE}


def test_the_sync_guard_sees_what_it_looks_for():
    """The guard can fail: .item(), a tensor from a list (upsample_conv's fold matrix of 2026-12-06
    built one at every call: a copy from host memory) and a copy to the host are found, with their
    lines; Adam's host-side step counts and a CPU tensor are not."""
    x = torch.randn(4, device=DEVICE)
    with HostSyncs() as syncs:
        x.sum().item()
        x.new_tensor([[0, 0, 1], [0, 1, 1]])
        with contextlib.suppress(NotImplementedError):  # a meta tensor has no data to copy: recorded, then refused
            x.to("cpu")
        torch.ones(3).sum().item()  # on the host: no sync
    assert sorted(name.split(" at ")[0] for name in syncs.found) == [
        "aten._local_scalar_dense.default",
        "copy meta -> cpu",
        "new_tensor from host data",
    ]
    assert all(" at tests/test_device.py:" in name for name in syncs.found)


def test_sgqns_update_of_2026_12_06_is_caught(monkeypatch):
    """The defect this guard was made for: upsample_conv as it was (its fold matrix built from a list at every
    call) makes the attribution predictor's step copy from the host, twice."""

    def old_upsample_conv(x, conv):
        fold = x.new_tensor([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]])
        kernel = torch.einsum("ak,bl,oikl->ioab", fold, fold, conv.weight)
        return torch.nn.functional.conv_transpose2d(x, kernel, conv.bias, stride=2, padding=1)

    monkeypatch.setattr(sgqn, "upsample_conv", old_upsample_conv)
    agent, args, batch, images = agent_and_batch(sgqn, DEVICE, sgqn_quantile=0.9, image_size=84, num_conv_layers=11)
    with HostSyncs() as syncs:
        sgqn.update(agent, batch, 2, args, -2.0, images)
    assert list(syncs.found.values()) == [2] and next(iter(syncs.found)).startswith("new_tensor from host data at tests/")


# ----------------------------------------------------------------------------- checkpoints across hosts
def test_a_checkpoint_resumes_where_fewer_gpus_are_visible(monkeypatch, tmp_path):
    """Written by a process that saw 2 GPUs, restored by one that sees 1 (a Slurm job with one GPU): the
    run's own GPU's RNG state is restored. torch.cuda as on such hosts: get_rng_state_all gives one
    state per visible GPU; set_rng_state_all with more states than GPUs raises IndexError."""
    gpu_states = [torch.full((8,), 1, dtype=torch.uint8), torch.full((8,), 2, dtype=torch.uint8)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: list(gpu_states))
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": gpu_states[0].clone())
    args = sac.Args(**TINY, cuda=False)
    agent = sac.make_agent((9, 32, 32), 2, args, torch.device("cpu"))
    path = str(tmp_path / "checkpoint.pt")
    run_plumbing.save_checkpoint(path, "sac_baseline", agent, args, 5, 1.0)

    restored = []

    def set_rng_state_all(states):  # one GPU visible
        if len(states) > 1:
            raise IndexError("tuple index out of range")
        restored.extend(states)

    monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_rng_state_all)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": restored.append(state))
    state = run_plumbing.load_checkpoint(path, "sac_baseline")
    run_plumbing.restore(agent, state)
    assert len(restored) == 1 and torch.equal(restored[0], gpu_states[0])

    restored.clear()  # a checkpoint written before the fix holds every GPU's state: the first is the run's
    state["rng"]["cuda"] = list(gpu_states)
    run_plumbing.restore(agent, state)
    assert len(restored) == 1 and torch.equal(restored[0], gpu_states[0])


# ----------------------------------------------------------------------------- which GPU a job gets
@pytest.mark.parametrize(
    "visible, gpus",
    [("2,3", ["2", "3"]), (" 1 , 0", ["1", "0"]), ("GPU-8a1f,1", ["GPU-8a1f", "1"]), ("0,-1,2", ["0"]), ("", [])],
)
def test_the_sweep_hands_out_the_gpus_it_was_given(monkeypatch, visible, gpus):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)  # the host's count must not matter
    assert sweep_module.visible_gpus() == gpus
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert sweep_module.visible_gpus() == [str(i) for i in range(8)]


def test_a_local_sweep_runs_its_jobs_on_its_launchers_gpus(tmp_path):
    """A real local sweep of 3 runs, 2 at a time, started under CUDA_VISIBLE_DEVICES=2,3 (on a CPU torch:
    the runs train on the CPU, and each job's start block says what it was given): the jobs see 2, 3
    and one of them again, never 0 or 1."""
    flags = ["--total-timesteps", "12", "--learning-starts", "8", "--eval-freq", "12", "--eval-episodes", "1"]
    flags += ["--eval-modes", "train", "--num-conv-layers", "2", "--num-filters", "8", "--projection-dim", "16"]
    flags += ["--hidden-dim", "32", "--image-size", "32", "--batch-size", "8"]
    grid = ["--methods", "sac_baseline.py", "--env-ids", "cartpole-balance", "--seeds", "1", "2", "3"]
    env = dict(ENV, CUDA_VISIBLE_DEVICES="2,3")
    out = subprocess.run(
        SWEEP + grid + ["--runs-dir", "runs", "--parallel", "2", "--", *flags],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    seen = []
    for seed in (1, 2, 3):
        record = sweep_module.json.load(open(tmp_path / "runs" / "jobs" / f"cartpole-balance__sac_baseline__{seed}.json"))
        log = open(record["log"]).read()
        seen += [
            line.split("CUDA_VISIBLE_DEVICES=")[1].rstrip(")") for line in log.splitlines() if "CUDA_VISIBLE_DEVICES=" in line
        ]
    assert len(seen) == 3 and set(seen) == {"2", "3"}, seen


# ----------------------------------------------------------------------------- rendering and CUDA settings
def unset(monkeypatch, name):
    """Remove an environment variable for this test only. render_on writes os.environ itself, and monkeypatch
    only restores what it saw: a bare delenv of an absent variable records nothing, so a MUJOCO_EGL_DEVICE_ID set
    by the test would stay for every later test in the worker (CI's sac_baseline tests then asked EGL for device 2)."""
    monkeypatch.setenv(name, "")
    monkeypatch.delenv(name)


@pytest.mark.parametrize(
    "environment, device, egl_id",
    [
        ({"MUJOCO_GL": "egl", "CUDA_VISIBLE_DEVICES": "3"}, "cuda", "2"),  # the EGL device that reports CUDA 0
        ({"MUJOCO_GL": "egl"}, "cuda:1", "0"),  # every GPU visible: the one reporting the run's index
        ({"MUJOCO_GL": "egl", "MUJOCO_EGL_DEVICE_ID": "1"}, "cuda", "1"),  # the user's choice stands
        ({"MUJOCO_GL": "egl", "CUDA_VISIBLE_DEVICES": "3"}, "cpu", None),  # not training on a GPU
        ({"MUJOCO_GL": "osmesa"}, "cuda", None),  # not EGL
    ],
)
def test_rendering_follows_the_runs_gpu(monkeypatch, environment, device, egl_id):
    """EGL's devices as an NVIDIA host lists them, each reporting its CUDA number (EGL_CUDA_DEVICE_NV): EGL device
    0 is CUDA 1, device 2 is CUDA 0; device 1 reports none."""
    for name in ("MUJOCO_GL", "MUJOCO_EGL_DEVICE_ID", "CUDA_VISIBLE_DEVICES"):
        unset(monkeypatch, name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    reported = {0: 1, 2: 0}
    asked = []
    monkeypatch.setattr(
        run_plumbing,
        "egl_device_of_cuda",
        lambda index: asked.append(index) or next((n for n, cuda in reported.items() if cuda == index), None),
    )
    line = run_plumbing.render_on(torch.device(device))
    assert os.environ.get("MUJOCO_EGL_DEVICE_ID") == egl_id
    if egl_id:
        assert line == f"rendering: EGL device {egl_id}"


def test_without_a_device_that_reports_its_cuda_number_egl_chooses(monkeypatch):
    """Mesa (this machine's EGL) reports no CUDA number: EGL's first device stays, and the start block says so."""
    monkeypatch.setenv("MUJOCO_GL", "egl")
    unset(monkeypatch, "MUJOCO_EGL_DEVICE_ID")
    assert run_plumbing.egl_device_of_cuda(0) is None  # asked of the real EGL here
    assert run_plumbing.render_on(torch.device("cuda:0")) == "rendering: EGL's first device (none reports CUDA device 0)"
    assert "MUJOCO_EGL_DEVICE_ID" not in os.environ


@pytest.mark.parametrize("deterministic, tf32", [(True, False), (False, True)])
def test_cuda_settings_follow_the_flags(deterministic, tf32):
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    saved += (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        run_plumbing.cuda_settings(sgqn.Args(torch_deterministic=deterministic, tf32=tf32))
        assert torch.backends.cudnn.deterministic is deterministic and torch.backends.cudnn.benchmark is (not deterministic)
        assert torch.backends.cudnn.allow_tf32 is tf32 and torch.backends.cuda.matmul.allow_tf32 is tf32
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved[2:]


@pytest.mark.parametrize("module", [sac, sgqn, soda])
def test_a_batch_goes_to_the_device_from_pinned_memory_without_waiting(monkeypatch, module):
    """The replay buffer's batch on a device: its 5 arrays (uint8 frames) each copied from page-locked memory
    with non_blocking, then made float there; the same values as on the CPU. (pin_memory needs a GPU: it
    is recorded here; tensor.to's arguments are read from the dispatched copies.)"""
    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pinned.append(self.dtype) or self)
    buffers = [module.ReplayBuffer(40, (3, 8, 8), 2, 3, device, seed=0) for device in (torch.device("cpu"), DEVICE)]
    rng = torch.Generator().manual_seed(0)
    for buffer in buffers:
        buffer.add_first(torch.randint(0, 256, (3, 8, 8), generator=rng, dtype=torch.uint8).numpy())
        for _ in range(30):
            frame = torch.randint(0, 256, (3, 8, 8), generator=rng, dtype=torch.uint8).numpy()
            buffer.add(frame, torch.rand(2, generator=rng).numpy(), 0.5, False)
    on_cpu = buffers[0].sample(6)
    copies = []

    class Copies(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if str(func) == "aten._to_copy.default" and (kwargs or {}).get("device") == DEVICE:
                copies.append((args[0].dtype, kwargs.get("non_blocking", False)))
            return func(*args, **(kwargs or {}))

    with Copies():
        on_device = buffers[1].sample(6)
    assert pinned == [torch.uint8, torch.float32, torch.float32, torch.uint8, torch.float32]
    assert copies == [(dtype, True) for dtype in pinned]
    assert [x.device for x in on_device] == [DEVICE] * 5 and [x.dtype for x in on_device] == [torch.float32] * 5
    assert [x.shape for x in on_device] == [x.shape for x in on_cpu]


def test_overlay_images_made_on_the_device_equal_the_hosts():
    """OverlayImages.sample_on: the same draws as sample (the same RNG calls on the host), resized on the device
    from a pool uploaded once: equal to the host's uint8 images up to float rounding (a value off by 1 where a
    pixel lands on .5), here with torch's resize run on the CPU; on the emulated device its only host copies
    are the pool's rows read in since (none after the first pass) and the crops' taps, never an image."""
    from envs.backgrounds import crop_taps, resized_crops_on

    host, device_side = envs.OverlayImages(seed=3, image_size=32), envs.OverlayImages(seed=3, image_size=32)
    for _ in range(3):
        expected = host.sample(64).astype(np.float32)
        slots, boxes, sizes, flips = device_side._draw(64)
        taps = crop_taps(boxes, sizes, device_side.pool.shape[1], 32, flips)
        made = resized_crops_on(torch.from_numpy(device_side.pool), slots, taps, "cpu").numpy()
        assert made.shape == expected.shape and np.abs(made - expected).max() <= 1
        assert (made != expected).mean() < 1e-3

    images = envs.OverlayImages(seed=3, image_size=32)
    first = images.sample_on(600, DEVICE)  # the first pass reads every one of the 500 images
    assert first.shape == (600, 3, 32, 32) and first.device == DEVICE and first.dtype == torch.float32
    with HostSyncs() as syncs:
        images.sample_on(64, DEVICE)
    copies = {name.split(" at ")[0]: count for name, count in syncs.found.items()}
    assert copies == {"copy cpu -> meta": 7}, syncs.found  # slots and 6 tap arrays; no pool rows, no image
    reference = envs.OverlayImages(seed=3, image_size=32)
    reference.sample(600), reference.sample(64)  # the same calls: a call draws its crops for all its images at once
    on_host = reference.sample(4)
    assert torch.equal(images.sample_on(4, "cpu"), torch.from_numpy(on_host).float())  # on the CPU: the host's own path


def test_the_device_pool_follows_a_streamed_folder(tmp_path):
    """A folder larger than the pool streams through it: slots are read in again and again. The device path
    (its pool uploaded once, then each slot read in since) stays equal to the host's images batch after batch."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (24 + i % 5, 30, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    host = envs.OverlayImages(str(tmp_path), image_size=16, seed=1, max_images=8, draws_per_image=2)
    device_side = envs.OverlayImages(str(tmp_path), image_size=16, seed=1, max_images=8, draws_per_image=2)
    for _ in range(12):  # 12 x 6 draws: every slot refilled several times
        expected = host.sample(6).astype(np.float32)
        made = device_side.resized_on(6, "cpu").numpy()
        assert np.abs(made - expected).max() <= 1 and (made != expected).mean() < 1e-2
    assert device_side._reads > 3 * len(device_side.pool)  # it did stream


@pytest.mark.parametrize("method", ["sac", "rad", "soda", "sgqn"])
def test_what_an_env_step_syncs_is_the_observation_up_and_the_action_down(method):
    """Acting (policy_action, once per env step) is the loop's one sync by design: the observation goes to the
    device and the action comes back to the host for MuJoCo; nothing else crosses (RAD's and SODA's centre crop
    of their larger frames is made on the device)."""
    module, changes = UPDATES[method]
    agent, args, _, _ = agent_and_batch(module, DEVICE, **changes)
    frame = run_plumbing.render_size(args)
    obs = np.zeros((1, 9, frame, frame), dtype=np.uint8)
    with HostSyncs() as syncs, contextlib.suppress(NotImplementedError):  # a meta action has no data to copy back
        module.policy_action(agent, obs, DEVICE, deterministic=False)
    crossings = sorted(name.split(" at ")[0] for name in syncs.found)
    # the observation's upload (its constructor and the copy it makes) and the action's download, in policy_action
    assert crossings == ["as_tensor from host data", "copy cpu -> meta", "copy meta -> cpu"], syncs.found
    assert any(name.startswith(f"copy meta -> cpu at {module.__name__}.py:") for name in syncs.found)
