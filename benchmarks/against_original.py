"""Our SGQN update against the original's, SuReLI/SGQN's `SGSAC.update` (commit f383fc0): loss for
loss, weight for weight, mask pixel for pixel; with `--algorithm svea`, `rad` or `soda`, our SVEA
(`sac_baseline.py --augmentation svea`), RAD (`sac_baseline.py --augmentation crop`) or SODA (`soda.py`)
against the same repository's `SVEA.update`, `RAD.update` or `SODA.update`, loss for loss, weight for weight.

    git clone <SuReLI/SGQN on GitHub> ~/SGQN && git -C ~/SGQN checkout f383fc0
    pip install --no-deps captum==0.9.0   # the original's guided backprop; it imports numpy, matplotlib, tqdm, packaging
    python benchmarks/against_original.py --src ~/SGQN/DMC/src                   # float64: must agree
    python benchmarks/against_original.py --src ~/SGQN/DMC/src --dtype float32   # the drift of rounding alone
    python benchmarks/against_original.py --src ~/SGQN/DMC/src --perturb tau     # a changed update is caught
    python benchmarks/against_original.py --src ~/SGQN/DMC/src --time            # ms per update, both sides
    python benchmarks/against_original.py --src ~/SGQN/DMC/src --algorithm svea                        # SVEA, alpha = beta
    python benchmarks/against_original.py --src ~/SGQN/DMC/src --algorithm svea --svea-weights 0.3 0.7 # its other branch
    python benchmarks/against_original.py --src ~/SGQN/DMC/src --algorithm rad                         # RAD
    python benchmarks/against_original.py --src ~/SGQN/DMC/src --algorithm soda                        # SODA

SVEA: the same sizes, critic weight decay 0 on both sides (the original's default, and
sac_baseline.py has none), its alpha and beta from --svea-weights (when they are equal the original
makes one critic pass over the clean and overlaid batches stacked, otherwise two passes; ours always
makes one stacked pass). Both get the same shifted batches, policy noise and overlay images; no mask.

RAD and SODA: both sides built on 100-px frames (the original's arguments.py for rad and soda), critic weight
decay 0 (the original's default); both get the same batch of random 84-px crops of obs and next_obs (the
original's buffer crops in `sample()`, ours in the update: ours are served), the same policy noise and, on SODA's
aux steps (even), the same SODA batch of 24 frames (`sample_soda`), its two crops (the clean one first) and its
overlay images. SODA's rows also compare its aux loss, its predictor (projection and head; its conv stack is the
critic's) and the predictor's moving-average target, all of it (the original's `predictor_target`).

Both sides are built at 11 convs x 32 filters (the original's decoder is wired to a 32 x 21 x 21
encoder output, so no smaller encoder runs), projection 50, hidden 256, batch 16, rho 0.98, critic
weight decay 1e-5, each with its own defaults for the rest; the original's weights are copied into
ours. For steps 1..20 (odd: critic only; even: critic, actor and temperature, target, attribution
predictor: both sides decide by `step % 2`), both get the same shifted batches, policy noise, grey
level for the masked pixels and overlay images. After each update it prints the relative difference
(max |ours - theirs| / max |theirs|) of each loss and parameter group, and how many pixels differ in
the consistency mask and in the attribution predictor's target mask; the last line is the largest
difference. It exits 1 when a difference exceeds --threshold or a mask pixel differs, naming the
first. In float64 the two agree to 1e-12 and every mask pixel; in float32 rounding alone drifts
(about 1e-7 at the first update, 1e-4 to 1e-2 after 20, and a few mask pixels). --perturb changes
our side only, to show a failure: critic Adam beta1 0.9 -> 0.9001, encoder tau 0.05 -> 0.049, or
rho 0.98 -> 0.979. (Both sides' aux loss is float32 even in float64, its target mask being `.float()`:
its column agrees to float32's resolution; the weights it trains are compared in float64.)

The original is imported from --src at run time; no code of it is held here. Patched in it: `.cuda()`
(a CPU runs it), its Places365 loader (the shared overlay images are served instead), its
TensorBoard writer, and kornia, torchvision and turtle where they are not installed (imported, never
used by the update). The shared draws are served at their draw points: the original's policy noise
(`torch.randn_like`), grey level (`random.uniform`) and Places365 batches; ours' random shift, policy
noise and grey level (`torch.rand`); our overlay images are the update's argument.

--time instead times each side's update at the paper's size (projection 100, hidden 1024, batch 128,
float32), interleaved in one process: the original's SAC, SGSAC, SVEA, RAD and SODA against sac_baseline.py's,
sgqn.py's, sac_baseline.py --augmentation svea's and crop's, and soda.py's update, median ms per update (mean of
an odd and an even step) and the ratios (our SVEA's time includes its random shift, our RAD's and SODA's their
batch crops, a few ms on a CPU; SODA's aux step, on its default 256 frames, crops and overlays on both sides: on a
CPU the original's with our crop, its own asserting a CUDA tensor).
`--device cuda` times both sides on the GPU (benchmarks/gpu_check.py does). Both sides
get ready batches and overlay images, so sampling and shifting are not timed; torch's threads as set
(OMP_NUM_THREADS).
"""

import argparse
import contextlib
import importlib
import os
import statistics
import sys
import time
import types
import warnings
from unittest import mock

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import run_plumbing  # noqa: E402
import sac_baseline  # noqa: E402
import sgqn  # noqa: E402
import soda  # noqa: E402

OBS_SHAPE, ACTION_DIM = (9, 84, 84), 6
RENDERED_SHAPE = (9, 100, 100)  # RAD's and SODA's frames, cropped to OBS_SHAPE in the update (the original's arguments.py)
SODA_BATCH, SODA_DEFAULT_BATCH = 24, 256  # SODA's auxiliary batch in the comparison, and when timing (its default)
SIZE = dict(projection_dim=50, hidden_dim=256, batch_size=16)
PAPER_SIZE = dict(projection_dim=100, hidden_dim=1024, batch_size=128)
RHO, WEIGHT_DECAY = 0.98, 1e-5
PERTURBATIONS = {"none": {}, "beta": {}, "tau": {"encoder_tau": 0.049}, "rho": {"sgqn_quantile": 0.979}}  # rho: SGQN's only
BETA1 = 0.9001  # --perturb beta: our critic's Adam beta1 (0.9 on both sides)
# The original logs its losses through `L.log(name, ...)`; ours returns them (a sum of several).
LOSSES = {
    "q loss": ("train_critic/loss", ("losses/qf1_loss", "losses/qf2_loss", "losses/consistency_loss")),
    "actor loss": ("train_actor/loss", ("losses/actor_loss",)),
    "alpha loss": ("train_alpha/loss", ("losses/alpha_loss",)),
    "alpha": ("train_alpha/value", ("losses/alpha",)),
    "aux loss": ("train/aux_loss", ("losses/aux_loss",)),
}
SVEA_LOSSES = {"q loss": ("train_critic/loss", ("losses/critic_loss",))} | {
    name: LOSSES[name] for name in ("actor loss", "alpha loss", "alpha")
}
RAD_LOSSES = {"q loss": ("train_critic/loss", ("losses/qf1_loss", "losses/qf2_loss"))} | {
    name: LOSSES[name] for name in ("actor loss", "alpha loss", "alpha")
}
SODA_LOSSES = RAD_LOSSES | {"aux loss": ("train/aux_loss", ("losses/soda_loss",))}
ALGORITHM_LOSSES = {"sgqn": LOSSES, "svea": SVEA_LOSSES, "rad": RAD_LOSSES, "soda": SODA_LOSSES}
MASKS = ("mask px", "aux mask px")  # differing pixels: any is a divergence


def import_original(src):
    """SuReLI/SGQN's modules from `src` (its DMC/src), with stand-ins for what they import but the
    update never uses, where it is not installed."""
    if not os.path.isdir(src):
        raise SystemExit(f"error: --src {src}: no such folder")
    if not os.path.isfile(os.path.join(src, "algorithms", "sgsac.py")):
        raise SystemExit(f"error: --src {src}: no algorithms/sgsac.py in it (give SuReLI/SGQN's DMC/src)")
    try:
        importlib.import_module("captum")
    except ImportError:
        raise SystemExit("error: the original's guided backprop needs captum: pip install --no-deps captum==0.9.0") from None
    for name, submodules in (("kornia", ()), ("torchvision", ("transforms", "datasets", "utils")), ("turtle", ())):
        try:
            importlib.import_module(name)
        except ImportError:
            for module in (name, *(f"{name}.{sub}" for sub in submodules)):
                sys.modules[module] = mock.MagicMock()
    sys.path.insert(0, src)
    for message in ("Setting backward hooks on ReLU", "Input Tensor 0 did not already require", ".*functional.upsample"):
        warnings.filterwarnings("ignore", message=message)  # captum's at every call, the original decoder's
    return types.SimpleNamespace(
        **{
            name.split(".")[-1]: importlib.import_module(name)
            for name in (
                "algorithms.sac",
                "algorithms.sgsac",
                "algorithms.svea",
                "algorithms.rad",
                "algorithms.soda",
                "arguments",
                "augmentations",
            )  # fmt: skip
        }
    )


def original_agent(original, algorithm, size, svea_weights=(0.5, 0.5), device="cpu"):
    """The original's SAC, SGSAC, SVEA, RAD or SODA, from its own argument parser (its defaults but for the size,
    rho, SVEA's weights, SODA's batch and, for SGSAC, the weight decay), on the CPU (its `.cuda()` calls made no-ops)
    or the GPU. RAD and SODA are built on 100-px frames, as the original's train.py builds them."""
    argv = [
        "train.py",
        "--projection_dim",
        str(size["projection_dim"]),
        "--hidden_dim",
        str(size["hidden_dim"]),
        "--sgqn_quantile",
        str(RHO),
        "--critic_weight_decay",
        str(WEIGHT_DECAY if algorithm == "sgsac" else 0),
        "--soda_batch_size",
        str(size.get("soda_batch_size", SODA_BATCH)),
        "--svea_alpha",
        str(svea_weights[0]),
        "--svea_beta",
        str(svea_weights[1]),
    ]
    with mock.patch.object(sys, "argv", argv):
        args = original.arguments.parse_args()
    classes = {"sgsac": original.sgsac.SGSAC, "svea": original.svea.SVEA, "sac": original.sac.SAC}
    cls = (classes | {"rad": original.rad.RAD, "soda": original.soda.SODA})[algorithm]
    obs_shape = RENDERED_SHAPE if algorithm in ("rad", "soda") else OBS_SHAPE
    with contextlib.ExitStack() as stack:
        if torch.device(device).type == "cpu":
            stack.enter_context(mock.patch.object(torch.nn.Module, "cuda", lambda self, *a, **k: self))
            stack.enter_context(mock.patch.object(torch.Tensor, "cuda", lambda self, *a, **k: self))
        stack.enter_context(mock.patch.object(original.sgsac, "SummaryWriter", mock.MagicMock()))
        return cls(obs_shape, (ACTION_DIM,), args)


def our_args(module, size, **changes):
    return module.Args(num_conv_layers=11, num_filters=32, **size, cuda=False, **changes)


def their_parameters(agent):
    """{group: parameters} of the original's SGSAC, SVEA, RAD or SODA, in the order of ours. SODA's predictor: its
    projection and head (its conv stack is the critic's); its target: all of the moving average, conv stack included."""
    critic, target = agent.critic, agent.critic_target
    decoder = (
        {"decoder": [*agent.attribution_predictor.decoder.parameters()]} if hasattr(agent, "attribution_predictor") else {}
    )
    if hasattr(agent, "predictor"):
        predictor = [*agent.predictor.encoder.projection.parameters(), *agent.predictor.mlp.parameters()]
        decoder = {"predictor": predictor, "predictor target": [*agent.predictor_target.parameters()]}
    return {
        "conv": [*critic.encoder.shared_cnn.parameters()],
        "critic": [*critic.encoder.projection.parameters(), *critic.Q1.parameters(), *critic.Q2.parameters()],
        "actor": [*agent.actor.encoder.projection.parameters(), *agent.actor.mlp.parameters()],
        "target conv": [*target.encoder.shared_cnn.parameters()],
        "target critic": [*target.encoder.projection.parameters(), *target.Q1.parameters(), *target.Q2.parameters()],
        "log_alpha": [agent.log_alpha],
    } | decoder


def our_parameters(agent):
    """{group: parameters} of our Agent."""
    critic, target = agent.critic, agent.critic_target
    return (
        {
            "conv": [*critic.conv.parameters()],
            "critic": [*critic.projection.parameters(), *critic.q1.parameters(), *critic.q2.parameters()],
            "actor": [*agent.actor.parameters()],
            "target conv": [*target.conv.parameters()],
            "target critic": [*target.projection.parameters(), *target.q1.parameters(), *target.q2.parameters()],
            "log_alpha": [agent.log_alpha],
        }
        | ({"decoder": [*agent.decoder.parameters()]} if hasattr(agent, "decoder") else {})
        | soda_parameters(agent)
    )


def soda_parameters(agent):
    """{group: parameters} of our SODA's predictor (its projection and head) and target (all of it); none for the others."""
    if not hasattr(agent, "soda_predictor"):
        return {}
    predictor = [*agent.soda_predictor.projection.parameters(), *agent.soda_predictor.head.parameters()]
    return {"predictor": predictor, "predictor target": [*agent.soda_target.parameters()]}


def copy_weights(parameters):
    """{group: (the original's parameters, ours)}: theirs copied into ours."""
    with torch.no_grad():
        for name, (src, dst) in parameters.items():
            assert [p.shape for p in src] == [p.shape for p in dst], name
            for s, d in zip(src, dst):
                d.copy_(s)


def draws(updates, batch_size, obs_shape=OBS_SHAPE, crop_to=None, soda_batch=0):
    """Per update, what both sides must share: the batch before and after the random shift (with `crop_to`,
    RAD's and SODA's: before and after the random crops of obs and next_obs), the policy noise (next_obs; obs
    on actor steps), the grey level and overlay images in [0, 1]; with `soda_batch`, on even steps SODA's frames
    (its own batch), their two crops (the clean one first, as both sides draw them) and its overlay images."""
    b, out = batch_size, []
    frames = lambda n: torch.randint(0, 256, (n, *obs_shape)).to(torch.get_default_dtype())  # noqa: E731
    for step in range(1, updates + 1):
        obs, next_obs = frames(b), frames(b)
        batch = (obs, torch.rand(b, ACTION_DIM) * 2 - 1, torch.rand(b, 1), next_obs, (torch.rand(b, 1) > 0.1).to(obs.dtype))
        augment = (lambda x: soda.random_crop(x, crop_to)) if crop_to else sgqn.random_shift
        d = types.SimpleNamespace(
            batch=batch,
            shifted=[augment(obs), augment(next_obs)],
            noise=[torch.randn(b, ACTION_DIM) for _ in range(2 if step % 2 == 0 else 1)],
            grey=torch.rand(()).item(),
            images=torch.rand(b, 3, *(obs_shape[1:] if crop_to is None else (crop_to, crop_to))),
            soda_obs=None,
        )
        if soda_batch and step % 2 == 0:
            d.soda_obs = frames(soda_batch)
            d.soda_crops = [soda.random_crop(d.soda_obs, crop_to) for _ in range(2)]
            d.images = torch.rand(soda_batch, 3, crop_to, crop_to)
        out.append(d)
    return out


@contextlib.contextmanager
def served(owner, name, values):
    """`owner.name(...)` returns `values` one by one inside the block; all must be drawn."""
    queue = list(values)

    def serve(*args, **kwargs):
        assert queue, f"{name}: drawn more often than the other side"
        return queue.pop(0).clone()

    with mock.patch.object(owner, name, serve):
        yield
    assert not queue, f"{name}: drawn {len(queue)} time(s) less than the other side"


def recorded(owner, name, into):
    """`owner.name` as it is, its results appended to `into`."""
    function = getattr(owner, name)
    return mock.patch.object(owner, name, lambda *a, **k: into.append(function(*a, **k)) or into[-1])


def update_theirs(original, agent, d, step):
    """The original's update on the shared draws: {loss: value} (those it logs), its masks (SVEA, RAD, SODA: none)."""
    logged, masks = {}, []
    logger = types.SimpleNamespace(log=lambda key, value, step: logged.update({key: float(torch.as_tensor(value).detach())}))
    _, action, reward, _, not_done = d.batch
    shifted = (d.shifted[0].clone(), action, reward, d.shifted[1].clone(), not_done)
    uniform = lambda low, high: low + (high - low) * d.grey  # random.uniform's formula
    sgsac = isinstance(agent, original.sgsac.SGSAC)
    algorithm = {original.sgsac.SGSAC: "sgqn", original.svea.SVEA: "svea", original.rad.RAD: "rad"}.get(type(agent), "soda")
    buffer = types.SimpleNamespace(
        sample_drq=lambda: shifted, sample=lambda: shifted, sample_soda=lambda n: d.soda_obs.clone()
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(served(torch, "randn_like", d.noise))
        stack.enter_context(mock.patch.object(original.augmentations, "places_dataloader", True))
        stack.enter_context(
            mock.patch.object(original.augmentations, "_get_places_batch", lambda batch_size: d.images.clone())
        )
        if sgsac:
            stack.enter_context(mock.patch.object(original.sgsac, "random", types.SimpleNamespace(uniform=uniform)))
            stack.enter_context(recorded(original.sgsac, "compute_attribution_mask", masks))
        if d.soda_obs is not None:  # SODA's two crops of its frames (the batch's come cropped from `sample`)
            stack.enter_context(served(original.augmentations, "random_crop", d.soda_crops))
        agent.update(buffer, logger, step)
    losses = ALGORITHM_LOSSES[algorithm]
    return {name: logged[key] for name, (key, _) in losses.items() if key in logged}, masks


def our_algorithm(args):
    """sgqn, svea, rad or soda: which of ours `args` are (their Args class and augmentation)."""
    if isinstance(args, soda.Args):
        return "soda"
    return "sgqn" if isinstance(args, sgqn.Args) else {"svea": "svea", "crop": "rad"}[args.augmentation]


def update_ours(agent, args, d, step):
    """Our update on the shared draws: {loss: value} (those the original logs), its masks (SVEA, RAD, SODA: none)."""
    algorithm, batch, masks = our_algorithm(args), [x.clone() for x in d.batch], []
    module = {"sgqn": sgqn, "soda": soda}.get(algorithm, sac_baseline)
    with contextlib.ExitStack() as stack:
        stack.enter_context(served(torch, "randn_like", d.noise))
        if algorithm in ("rad", "soda"):  # the batch's crops, then SODA's two
            stack.enter_context(served(module, "random_crop", d.shifted + (d.soda_crops if d.soda_obs is not None else [])))
        else:
            stack.enter_context(served(module, "random_shift", d.shifted))
        if module is sgqn:
            stack.enter_context(served(torch, "rand", [torch.tensor(d.grey)]))
            stack.enter_context(recorded(sgqn, "saliency_mask", masks))
        if algorithm == "soda":
            soda_obs = None if d.soda_obs is None else d.soda_obs.clone()
            metrics = soda.update(agent, batch, step, args, -ACTION_DIM, soda_obs, d.images * 255)
        elif algorithm == "rad":
            metrics = module.update(agent, batch, step, args, -ACTION_DIM)
        else:
            metrics = module.update(agent, batch, step, args, -ACTION_DIM, d.images * 255)
    losses = ALGORITHM_LOSSES[algorithm]
    metrics = {name: sum(float(metrics[k]) for k in keys) for name, (_, keys) in losses.items() if keys[0] in metrics}
    return metrics, masks


def relative_difference(ours, theirs):
    """max |ours - theirs| / max |theirs| over lists of tensors (the absolute difference where theirs are all 0)."""
    with torch.no_grad():
        diff = max(float((a - b).abs().max()) for a, b in zip(ours, theirs))
        scale = max(float(b.abs().max()) for b in theirs)
    return diff / scale if scale else diff


def differences(theirs, ours, parameters):
    """{name: difference} after one update of each side ((losses, masks) each): each loss, each
    parameter group ({group: (theirs, ours)}), and the mask pixels that differ. The original
    computes the consistency mask first and the attribution predictor's last; ours computes that
    one only on aux steps."""
    (their_losses, their_masks), (our_losses, our_masks) = theirs, ours
    row = {
        name: relative_difference([torch.tensor(our_losses[name])], [torch.tensor(loss)])
        for name, loss in their_losses.items()
    }
    row |= {name: relative_difference(mine, src) for name, (src, mine) in parameters.items()}
    if not their_masks:  # SVEA
        return row
    row[MASKS[0]] = int((our_masks[0] != their_masks[0]).sum())
    if len(our_masks) > 1:
        row[MASKS[1]] = int((our_masks[-1] != their_masks[-1]).sum())
    return row


def first_divergence(rows, threshold):
    """(update, name, difference) of the first difference above threshold (for a mask: any pixel), or None."""
    for update, row in enumerate(rows, 1):
        for name, value in row.items():
            if value > (0 if name in MASKS else threshold):
                return update, name, value
    return None


def summary(rows, threshold):
    """The last line (the largest difference, the first divergence if any) and the exit status."""
    value, name, update = max(
        ((v, n, u) for u, row in enumerate(rows, 1) for n, v in row.items() if n not in MASKS), key=lambda entry: entry[0]
    )
    pixels = sum(v for row in rows for n, v in row.items() if n in MASKS)
    line = f"largest difference: {value:.1e} ({name}, update {update})"
    line += f"; {pixels} mask pixels differ" if any(n in MASKS for row in rows for n in row) else ""  # SVEA has none
    diverged = first_divergence(rows, threshold)
    if diverged is None:
        return f"{line}; all within {threshold:g}: the same update", 0
    update, name, value = diverged
    shown = f"{value} pixels" if name in MASKS else f"{value:.1e} > {threshold:g}"
    return f"{line}; first divergence: {name} at update {update} ({shown})", 1


def format_row(update, row, names):
    kind = "full" if update % 2 == 0 else "critic"
    cells = [("-" if n not in row else str(row[n]) if n in MASKS else f"{row[n]:.1e}").rjust(max(len(n), 7)) for n in names]
    return f"{update:>6}  {kind:<6}  " + "  ".join(cells)


def ours_for(algorithm, perturb, svea_weights):
    """Our side of --algorithm: (its Args, its agent on the CPU, the heading's words on both sides)."""
    changes = PERTURBATIONS[perturb]
    if algorithm == "sgqn":
        args = our_args(sgqn, SIZE, sgqn_quantile=RHO, critic_weight_decay=WEIGHT_DECAY, **changes)
        return args, sgqn.make_agent(OBS_SHAPE, ACTION_DIM, args, "cpu"), f"SGSAC.update against sgqn.update: rho {RHO}, "
    if algorithm == "soda":
        args = our_args(soda, SIZE, soda_batch_size=SODA_BATCH, **changes)
        heading = f"SODA.update against soda.update: SODA batch {SODA_BATCH}, "
        return args, soda.make_agent(OBS_SHAPE, ACTION_DIM, args, "cpu"), heading
    if algorithm == "rad":
        args = our_args(sac_baseline, SIZE, augmentation="crop", **changes)
        heading = "RAD.update against sac_baseline.update --augmentation crop: "
        return args, sac_baseline.make_agent(OBS_SHAPE, ACTION_DIM, args, "cpu"), heading
    alpha, beta = svea_weights
    args = our_args(sac_baseline, SIZE, augmentation="svea", svea_alpha=alpha, svea_beta=beta, **changes)
    heading = f"SVEA.update against sac_baseline.update --augmentation svea: alpha {alpha:g}, beta {beta:g}, "
    return args, sac_baseline.make_agent(OBS_SHAPE, ACTION_DIM, args, "cpu"), heading


def compare(opts):
    dtype = getattr(torch, opts.dtype)
    torch.set_default_dtype(dtype)
    torch.manual_seed(opts.seed)
    original = import_original(opts.src)
    if opts.algorithm != "sgqn" and opts.perturb == "rho":
        raise SystemExit(f"error: --perturb rho is SGQN's; with --algorithm {opts.algorithm} give beta or tau")
    theirs = original_agent(original, {"sgqn": "sgsac"}.get(opts.algorithm, opts.algorithm), SIZE, opts.svea_weights)
    args, ours, heading = ours_for(opts.algorithm, opts.perturb, opts.svea_weights)
    parameters = {name: (p, q) for (name, p), q in zip(their_parameters(theirs).items(), our_parameters(ours).values())}
    copy_weights(parameters)
    if opts.perturb == "beta":
        ours.critic_optimizer.param_groups[0]["betas"] = (BETA1, 0.999)
    masked = opts.algorithm == "sgqn"
    names = [*ALGORITHM_LOSSES[opts.algorithm], *parameters, *(MASKS if masked else ())]
    crops = opts.algorithm in ("rad", "soda")
    print(
        f"{heading.replace('.update against', '.update (SuReLI/SGQN) against')}{opts.dtype}, 11 convs x 32, projection "
        f"{SIZE['projection_dim']}, hidden {SIZE['hidden_dim']}, batch {SIZE['batch_size']}"
        f"{', 100-px frames cropped to 84' if crops else ''}, perturbation {opts.perturb}; "
        f"relative differences{', mask pixels' if masked else ''}",
        flush=True,
    )
    print(f"{'update':>6}  {'steps':<6}  " + "  ".join(n.rjust(max(len(n), 7)) for n in names))
    rows = []
    shapes = dict(obs_shape=RENDERED_SHAPE, crop_to=OBS_SHAPE[-1]) if crops else {}
    soda_batch = SODA_BATCH if opts.algorithm == "soda" else 0
    for step, d in enumerate(draws(opts.updates, SIZE["batch_size"], **shapes, soda_batch=soda_batch), 1):
        rows.append(differences(update_theirs(original, theirs, d, step), update_ours(ours, args, d, step), parameters))
        print(format_row(step, rows[-1], names), flush=True)
    line, status = summary(rows, opts.threshold)
    print(line)
    return status


def time_updates(opts):
    """Median ms per update (an odd and an even step) of each side, interleaved, at the paper's size."""
    torch.manual_seed(opts.seed)
    original = import_original(opts.src)
    device = torch.device(opts.device)
    b = PAPER_SIZE["batch_size"]
    obs, next_obs = (torch.randint(0, 256, (b, *OBS_SHAPE), device=device).float() for _ in range(2))
    batch = (obs, torch.rand(b, ACTION_DIM, device=device) * 2 - 1, torch.rand(b, 1, device=device), next_obs)
    batch += (torch.ones(b, 1, device=device),)
    images = torch.rand(b, 3, *OBS_SHAPE[1:], device=device)
    buffer = types.SimpleNamespace(sample=lambda: batch, sample_drq=lambda: batch)  # sampling untimed on both sides
    # RAD and SODA: 100-px frames; the original's buffer crops them (untimed), our update does (timed: a few ms).
    # SODA's aux step draws its frames and overlay images on both sides, its crops and overlay timed on both.
    frames = lambda n: torch.randint(0, 256, (n, *RENDERED_SHAPE), device=device).float()  # noqa: E731
    n = SODA_DEFAULT_BATCH
    rendered = (frames(b), batch[1], batch[2], frames(b), batch[4])
    soda_obs, soda_images = frames(n), torch.rand(n, 3, *OBS_SHAPE[1:], device=device)
    cropped = tuple(soda.random_crop(x, OBS_SHAPE[-1]) if x.dim() == 4 else x for x in rendered)
    rad_buffer = types.SimpleNamespace(sample=lambda: cropped, sample_soda=lambda n: soda_obs)
    places = {b: images, n: soda_images}
    sac_args = our_args(sac_baseline, PAPER_SIZE)
    sgqn_args = our_args(sgqn, PAPER_SIZE, sgqn_quantile=RHO, critic_weight_decay=WEIGHT_DECAY, augmentation="none")
    their_sac, their_sgsac, their_svea, their_rad, their_soda = (
        original_agent(original, a, PAPER_SIZE | {"soda_batch_size": n}, device=device)
        for a in ("sac", "sgsac", "svea", "rad", "soda")
    )
    rad_args, soda_args = our_args(sac_baseline, PAPER_SIZE, augmentation="crop"), our_args(soda, PAPER_SIZE)
    our_rad = sac_baseline.make_agent(OBS_SHAPE, ACTION_DIM, rad_args, device)
    our_soda = soda.make_agent(OBS_SHAPE, ACTION_DIM, soda_args, device)
    soda_step = lambda step: soda.update(  # noqa: E731
        our_soda, rendered, step, soda_args, -ACTION_DIM, *((soda_obs, 255 * soda_images) if step % 2 == 0 else ())
    )
    svea_args = our_args(sac_baseline, PAPER_SIZE, augmentation="svea")
    our_svea = sac_baseline.make_agent(OBS_SHAPE, ACTION_DIM, svea_args, device)
    our_sac = sac_baseline.make_agent(OBS_SHAPE, ACTION_DIM, sac_args, device)
    our_sgqn = sgqn.make_agent(OBS_SHAPE, ACTION_DIM, sgqn_args, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    run_plumbing.cuda_settings(sgqn_args)  # for both sides: the scripts' defaults (deterministic cudnn, no TF32)
    run = {
        "original SAC": lambda step: their_sac.update(buffer, None, step),
        "ours SAC": lambda step: sac_baseline.update(our_sac, batch, step, sac_args, -ACTION_DIM),
        "original SGSAC": lambda step: their_sgsac.update(buffer, None, step),
        "ours SGQN": lambda step: sgqn.update(our_sgqn, batch, step, sgqn_args, -ACTION_DIM, 255 * images),
        "original SVEA": lambda step: their_svea.update(buffer, None, step),
        "ours SVEA": lambda step: sac_baseline.update(our_svea, batch, step, svea_args, -ACTION_DIM, 255 * images),
        "original RAD": lambda step: their_rad.update(rad_buffer, None, step),
        "ours RAD": lambda step: sac_baseline.update(our_rad, rendered, step, rad_args, -ACTION_DIM),
        "original SODA": lambda step: their_soda.update(rad_buffer, None, step),
        "ours SODA": soda_step,
    }
    print(
        f"ms per update (median of {opts.repeats}, each the mean of an odd and an even step), float32, 11 convs x 32, "
        f"projection 100, hidden 1024, batch {b} (SODA's own {n}), "
        + (torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} thread(s)"),
        flush=True,
    )
    times = {name: [] for name in run}
    with contextlib.ExitStack() as stack:
        stack.enter_context(mock.patch.object(original.augmentations, "places_dataloader", True))
        stack.enter_context(
            mock.patch.object(original.augmentations, "_get_places_batch", lambda batch_size: places[batch_size])
        )
        if device.type == "cpu":  # the original's random_crop asserts a CUDA tensor: on a CPU its SODA crops with ours
            crop = lambda x: soda.random_crop(x, OBS_SHAPE[-1])  # noqa: E731
            stack.enter_context(mock.patch.object(original.augmentations, "random_crop", crop))
        for repeat in range(opts.repeats + 1):  # the first round warms up
            for name, update in run.items():
                sync()
                start = time.perf_counter()
                update(2 * repeat + 1), update(2 * repeat + 2)
                sync()
                if repeat:
                    times[name].append(1000 * (time.perf_counter() - start) / 2)
    ms = {name: statistics.median(t) for name, t in times.items()}
    for method, theirs, mine in (
        ("SAC", "original SAC", "ours SAC"),
        ("SGQN", "original SGSAC", "ours SGQN"),
        ("SVEA", "original SVEA", "ours SVEA"),
        ("RAD", "original RAD", "ours RAD"),
        ("SODA", "original SODA", "ours SODA"),
    ):
        print(f"{method}: original {ms[theirs]:.0f} ms, ours {ms[mine]:.0f} ms (ours / original {ms[mine] / ms[theirs]:.2f})")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="SuReLI/SGQN's DMC/src folder")
    p.add_argument(
        "--algorithm",
        choices=("sgqn", "svea", "rad", "soda"),
        default="sgqn",
        help="the update to compare (--time times all five)",
    )
    p.add_argument(
        "--svea-weights", type=float, nargs=2, default=(0.5, 0.5), metavar=("ALPHA", "BETA"), help="with --algorithm svea"
    )
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--threshold", type=float, default=1e-8, help="largest relative difference that passes")
    p.add_argument("--perturb", choices=PERTURBATIONS, default="none", help="change our side only, to see a failure")
    p.add_argument("--updates", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--time", action="store_true", help="time both sides' updates at the paper's size instead")
    p.add_argument("--repeats", type=int, default=5, help="with --time: timed rounds after one warm-up round")
    p.add_argument(
        "--device", default="cpu", help="with --time: cpu or cuda (both sides on it; their default is fp32, no TF32)"
    )
    opts = p.parse_args()
    return time_updates(opts) if opts.time else compare(opts)


if __name__ == "__main__":
    sys.exit(main())
