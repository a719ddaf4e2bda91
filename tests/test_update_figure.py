"""experiments/update_figure.py: one SGQN update drawn step by step. Its panels are checked against the
script's own functions applied to the recorded inputs, and its CLI writes the picture or one error line."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from common import ROOT

sys.path.insert(0, os.path.join(ROOT, "experiments"))
import update_figure  # noqa: E402


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    out = tmp_path_factory.mktemp("figure") / "update.png"
    columns, metrics = update_figure.main(["--fresh", "--out", str(out), "--samples", "2", "--seed", "3"])
    return out, columns, metrics


def test_every_panel_is_the_updates_own_tensor(drawn):
    """Recomputed here from the panels' own inputs with sgqn.py's functions: the masked obs is the shifted obs
    where the rho-mask holds and one grey level elsewhere; the overlaid obs is 0.5 shifted + 0.5 image; the
    rho-mask keeps about 1 - rho of each frame's pixels; the losses are the update's."""
    out, columns, metrics = drawn
    assert list(columns) == list(update_figure.COLUMNS)
    shifted, mask, masked = columns["shifted"], columns["rho-mask"], columns["masked obs"]
    assert shifted.shape == (2, 84, 84, 3) and mask.shape == (2, 84, 84) and mask.dtype == bool
    assert np.array_equal(masked[mask], shifted[mask])  # salient pixels kept
    outside = masked[~mask]
    assert np.ptp(outside) < 1e-6  # every other pixel one grey level
    assert np.allclose(columns["overlaid obs"], 0.5 * shifted + 0.5 * columns["overlay image"], atol=1e-6)
    kept = mask.mean(axis=(1, 2))
    assert np.all((0.01 < kept) & (kept < 0.04)), kept  # rho 0.98 on cartpole: about 2% of the pixels
    assert not np.array_equal(columns["obs"], shifted)  # the shift moved something
    assert {"losses/qf1_loss", "losses/consistency_loss", "losses/actor_loss", "losses/aux_loss"} <= set(metrics)
    predicted = columns["predicted"]
    assert predicted.shape == (2, 84, 84) and predicted.min() >= 0 and predicted.max() <= 1  # probabilities
    assert columns["target mask"].dtype == bool


def test_the_rho_mask_is_saliency_mask_of_the_attribution(drawn):
    """The attribution panel's ranking gives the rho-mask: the masked pixels are the top of its |attribution|."""
    _, columns, _ = drawn
    heat, mask = columns["attribution"], columns["rho-mask"]
    for h, m in zip(heat, mask):
        assert h[m].min() >= np.quantile(h, 0.95)  # the kept pixels are among the most salient


def test_the_picture_holds_a_panel_per_tensor_and_row(drawn):
    out, _, _ = drawn
    from PIL import Image

    height, width, _ = np.asarray(Image.open(out)).shape
    assert width > 9 * 150 and 2 * 150 < height < width  # 9 columns of panels, 2 rows, a title


@pytest.mark.parametrize(
    "flags, message",
    [
        ([], "give a CHECKPOINT or --fresh (a small fresh agent), one of them"),
        (["--fresh", "--samples", "9"], "--samples 9: give 1 to 8"),
        (["--fresh", "--out", "x.jpg"], "--out x.jpg: give a .png file"),
        (["missing.pt"], "checkpoint not found: missing.pt"),
    ],
)
def test_bad_input_is_one_line(flags, message, tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "update_figure.py"), *flags],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and result.stderr.strip() == f"error: {message}", result.stderr


@pytest.mark.parametrize(
    "state, message",
    [
        ({"algorithm": "sac_baseline", "args": {"env_id": "cartpole-balance"}}, "was written by sac_baseline.py, not sgqn.py"),
        ({"algorithm": "sgqn", "args": {"env_id": "cartpole-balance"}, "buffer": None}, "holds no replay buffer (train with --save-buffer), or use --fresh"),
        ({"algorithm": "sgqn", "args": {"env_id": "cartpole-balance", "consistency_weight": 0.0}, "buffer": {}}, "--consistency-weight 0.0 leaves panels out"),
        ({"algorithm": "sgqn", "args": {"env_id": "cartpole-balance", "augmentation": "none"}, "buffer": {}}, "--augmentation none leaves panels out"),
    ],
)  # fmt: skip
def test_a_checkpoint_it_cannot_draw_is_one_line(state, message, tmp_path):
    """The checkpoint's own fields decide: another script's, one without its buffer, or an SGQN run whose
    update skips a panel (no consistency loss, no shift) stops before any agent is built."""
    torch.save(state, tmp_path / "checkpoint.pt")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "update_figure.py"), "checkpoint.pt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: checkpoint checkpoint.pt")
    assert message in lines[0], result.stderr
