"""One SGQN update, drawn step by step: each tensor `sgqn.update` computes, for a few observations of a batch.

    python experiments/update_figure.py runs/<run>/checkpoint.pt --out docs/update.png   # a checkpoint with its buffer (--save-buffer)
    python experiments/update_figure.py --fresh --env-id cartpole-balance --out update.png  # a small fresh agent, random frames

One row per observation (`--samples`, default 3), one column per tensor, in the order `update` makes
them on an even step (critic, actor and temperature, target, attribution predictor):

  obs            the sampled stacked observation (its newest frame: every panel shows the newest)
  shifted        its random shift (DrQ's, pad 4): what the critic sees
  attribution    |guided backprop of Q1| (max over colour channels), the critic before its step
  rho-mask       the attribution kept at the sample's quantile rho (paper section 4.1)
  masked obs     the shifted obs outside the mask set to this update's grey level (eq. 2's input)
  overlay image  the image drawn for the attribution predictor
  overlaid obs   0.5 obs + 0.5 image (the predictor's input)
  predicted      the decoder's prediction, sigmoid of its logits (max over colour channels), from the overlaid obs
  target mask    the critic's mask after its step, on the clean obs: what eq. 3 compares it to

Every panel is recorded from one real call of `sgqn.update` (its module functions wrapped, nothing
recomputed), so the picture is the script's own computation. The title gives that update's losses.
The batch comes from the checkpoint's replay buffer (seeded by --seed), or, with --fresh, from a
small fresh agent's buffer filled by random actions (2 convs x 8 filters: an untrained critic).
Bad input stops with one `error:` line, exit status 1.
"""

import argparse
import contextlib
import importlib
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import envs  # noqa: E402
import run_plumbing  # noqa: E402

COLUMNS = (
    "obs", "shifted", "attribution", "rho-mask", "masked obs", "overlay image", "overlaid obs", "predicted", "target mask",
)  # fmt: skip
FRESH = dict(num_conv_layers=2, num_filters=8, projection_dim=16, hidden_dim=32, batch_size=16)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", nargs="?", help="an sgqn.py checkpoint saved with --save-buffer")
    p.add_argument("--fresh", action="store_true", help="a small fresh agent instead of a checkpoint")
    p.add_argument("--env-id", default="cartpole-balance", help="with --fresh: the task whose frames fill the buffer")
    p.add_argument("--out", default="update.png", help="PNG file to write")
    p.add_argument("--samples", type=int, default=3, help="observations of the batch to draw, one row each")
    p.add_argument("--seed", type=int, default=0, help="seeds the batch, the shifts, the grey level and the overlay")
    opts = p.parse_args(argv)
    if bool(opts.checkpoint) == opts.fresh:
        raise envs.ConfigError("give a CHECKPOINT or --fresh (a small fresh agent), one of them")
    if not 1 <= opts.samples <= 8:
        raise envs.ConfigError(f"--samples {opts.samples}: give 1 to 8")
    if not opts.out.lower().endswith(".png"):
        raise envs.ConfigError(f"--out {opts.out}: give a .png file")
    if not os.path.isdir(os.path.dirname(opts.out) or "."):
        raise envs.ConfigError(f"--out {opts.out}: no such folder {os.path.dirname(opts.out)!r}")
    return opts


def agent_and_buffer(sgqn, opts):
    """The agent and a filled replay buffer: the checkpoint's, or a fresh small agent's filled with random actions."""
    if opts.fresh:
        envs.check_args(opts.env_id)
        args = sgqn.Args(env_id=opts.env_id, seed=opts.seed, cuda=False, **FRESH)
        args.sgqn_quantile = sgqn.domain_quantile(args.env_id)
        env = envs.make_env(args.env_id, opts.seed, "train", **run_plumbing.env_flags(args))
        env.action_space.seed(opts.seed)
        agent = sgqn.make_agent(env.observation_space.shape, env.action_space.shape[0], args, torch.device("cpu"))
        buffer = sgqn.ReplayBuffer(400, (3, args.image_size, args.image_size), env.action_space.shape[0], 3, "cpu", opts.seed)
        obs, _ = env.reset(seed=opts.seed)
        buffer.add_first(obs[-3:])
        for _ in range(300):
            obs, reward, terminated, truncated, _ = env.step(action := env.action_space.sample())
            buffer.add(obs[-3:], action, reward, terminated)
            if terminated or truncated:
                obs, _ = env.reset()
                buffer.add_first(obs[-3:])
        env.close()
        return agent, buffer, args, "a small fresh agent, random frames"
    state = run_plumbing.load_checkpoint(opts.checkpoint, "sgqn")
    if state["buffer"] is None:
        raise envs.ConfigError(
            f"checkpoint {opts.checkpoint} holds no replay buffer (train with --save-buffer), or use --fresh"
        )
    args = sgqn.Args(**{k: v for k, v in state["args"].items() if k in sgqn.Args.__dataclass_fields__})
    args.sgqn_quantile = args.sgqn_quantile or sgqn.domain_quantile(args.env_id)
    args.compile, args.cuda = False, False
    for name, fine in (("augmentation", args.augmentation == "shift"), ("consistency_weight", args.consistency_weight > 0),
                       ("aux_update_freq", args.aux_update_freq > 0)):  # fmt: skip
        if not fine:
            raise envs.ConfigError(
                f"checkpoint {opts.checkpoint}: --{name.replace('_', '-')} {getattr(args, name)} leaves panels out; draw one of SGQN as the paper has it"
            )
    size = len(state["buffer"]["frames"])
    frame_shape = state["buffer"]["frames"].shape[1:]
    agent = sgqn.make_agent(
        (3 * args.frame_stack, *frame_shape[1:]), state["buffer"]["actions"].shape[1], args, torch.device("cpu")
    )
    buffer = sgqn.ReplayBuffer(size, frame_shape, state["buffer"]["actions"].shape[1], args.frame_stack, "cpu", opts.seed)
    run_plumbing.restore(agent, state, buffer)
    buffer.rng = np.random.default_rng(opts.seed)  # the figure's own draw, not the run's next one
    run = os.path.basename(os.path.dirname(os.path.abspath(opts.checkpoint)))
    return agent, buffer, args, f"{run} at step {state['step']} ({state['step'] * run_plumbing.action_repeat(args)} frames)"


@contextlib.contextmanager
def recording(sgqn, agent):
    """Wraps the module functions `update` calls (it looks them up at call time) and the decoder: {name: [outputs]}."""
    seen = {name: [] for name in ("random_shift", "guided_backprop", "saliency_mask", "masked_observation", "random_overlay")}
    seen["decoder"] = []
    originals = {name: getattr(sgqn, name) for name in seen if name != "decoder"}

    def wrap(name, fn):
        def recorded(*args, **kwargs):
            out = fn(*args, **kwargs)
            seen[name].append((args, out))
            return out

        return recorded

    for name, fn in originals.items():
        setattr(sgqn, name, wrap(name, fn))
    hook = agent.decoder.register_forward_hook(lambda module, args, out: seen["decoder"].append((args, out)))
    try:
        yield seen
    finally:
        for name, fn in originals.items():
            setattr(sgqn, name, fn)
        hook.remove()


def panels(seen, images, samples):
    """{column: (samples, H, W[, 3]) arrays} from one recorded update, newest frame of each stack."""

    def newest(x):  # (B, 3k, H, W) -> (B, H, W, 3) in [0, 1]
        return (x[:samples, -3:].detach().float().permute(0, 2, 3, 1) / 255).clamp(0, 1).numpy()

    def mask(m):
        return m[:samples, -3:].any(dim=1).numpy()

    (obs,), shifted = seen["random_shift"][0][0], seen["random_shift"][0][1]  # the first shift is obs's
    attribution = seen["guided_backprop"][0][1][0]  # the critic's, before its step (keep_q: (attribution, q))
    heat = attribution[:samples, -3:].abs().amax(dim=1)
    heat = (heat / heat.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]).numpy()
    (_, masked_obs) = seen["masked_observation"][0]
    overlaid = seen["random_overlay"][0][1]
    logits = seen["decoder"][0][1]
    return {
        "obs": newest(obs),
        "shifted": newest(shifted),
        "attribution": heat,
        "rho-mask": mask(seen["saliency_mask"][0][1]),
        "masked obs": newest(masked_obs),
        "overlay image": newest(images),
        "overlaid obs": newest(overlaid),
        "predicted": torch.sigmoid(logits[:samples, -3:].detach()).amax(dim=1).numpy(),
        "target mask": mask(seen["saliency_mask"][-1][1]),
    }


def draw(columns, metrics, header, out):
    samples = len(columns["obs"])
    fig, axes = plt.subplots(samples, len(COLUMNS), figsize=(1.6 * len(COLUMNS), 1.75 * samples + 0.9), squeeze=False)
    for col, name in enumerate(COLUMNS):
        for row in range(samples):
            ax = axes[row, col]
            picture = columns[name][row]
            ax.imshow(picture, cmap="inferno" if name == "attribution" else "gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([]), ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=9)
    losses = "  ".join(f"{k.split('/')[-1]} {float(v):.4g}" for k, v in metrics.items() if k.endswith("_loss"))
    fig.suptitle(f"{header}\n{losses}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None):
    opts = parse(argv)
    sgqn = importlib.import_module("sgqn")
    agent, buffer, args, source = agent_and_buffer(sgqn, opts)
    torch.manual_seed(opts.seed)
    batch = buffer.sample(args.batch_size)
    overlay = envs.OverlayImages(args.overlay_dir, args.image_size, opts.seed)
    images = torch.as_tensor(overlay.sample(args.batch_size)).float()
    step = 2 * args.aux_update_freq  # an even step that trains the attribution predictor, the actor and the target
    with recording(sgqn, agent) as seen:
        metrics = sgqn.update(agent, batch, step, args, -float(batch[1].shape[1]), images)
    columns = panels(seen, images, opts.samples)
    header = f"one sgqn.py update ({args.env_id}, rho {args.sgqn_quantile}): {source}"
    draw(columns, metrics, header, opts.out)
    print(f"wrote {opts.out}: {opts.samples} observations x {len(COLUMNS)} tensors of one update")
    return columns, metrics


if __name__ == "__main__":
    with run_plumbing.exit_codes():  # bad input: one `error:` line, exit 1
        main()
