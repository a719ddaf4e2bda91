"""What the conv stack alone costs: a floor under any faithful SAC update on this machine.

    python benchmarks/encoder_floor.py            # batch 128, 2 threads, median of 9

A SAC update at the paper's size is almost all conv-stack work. Per step, ours runs 2 no-grad
passes of the stack on next_obs (the policy's, online weights; the target critic's) + 1 forward
and backward on obs (the critic loss) + half of one no-grad pass (the actor step, every 2nd step,
one pass shared by actor and critic). The original runs 3 + 1 (its actor step computes the conv
features twice). This prints the median cost of each kind of pass for the script's own ConvStack
(imported from sac_baseline.py) and the sums, in NCHW and channels-last, with the FLOP rate.
The floor leaves out the heads, the projection, Adam and the random shift (the rest of a step).
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import run_plumbing  # noqa: E402
import sac_baseline  # noqa: E402


def median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9)
    opts = p.parse_args()
    torch.set_num_threads(opts.threads)
    run_plumbing.keep_freed_memory()
    args = sac_baseline.Args()
    obs_shape = (3 * args.frame_stack, args.image_size, args.image_size)
    # Multiply-adds of one forward pass: every output pixel of every conv reads 3x3 x in-channels.
    h = args.image_size
    gflop = 0.0
    for layer in range(args.num_conv_layers):
        h = (h - 3) // 2 + 1 if layer == 0 else h - 2
        in_channels = obs_shape[0] if layer == 0 else args.num_filters
        gflop += 2 * h * h * args.num_filters * 9 * in_channels * opts.batch_size / 1e9
    print(
        f"ConvStack {args.num_conv_layers} x {args.num_filters} filters, batch {opts.batch_size}, {opts.threads} threads: "
        f"{gflop:.1f} GFLOP per forward pass"
    )
    for layout in ("NCHW", "channels-last"):
        torch.manual_seed(0)
        conv = sac_baseline.ConvStack(obs_shape, args.num_conv_layers, args.num_filters)
        obs = torch.randint(0, 256, (opts.batch_size, *obs_shape)).float()
        if layout == "channels-last":
            conv, obs = conv.to(memory_format=torch.channels_last), obs.contiguous(memory_format=torch.channels_last)

        def no_grad(conv=conv, obs=obs):  # called in this iteration only
            with torch.no_grad():
                conv(obs)

        def forward_backward(conv=conv, obs=obs):
            conv.zero_grad(set_to_none=True)
            conv(obs).square().mean().backward()

        fwd, fwd_bwd = median_ms(no_grad, opts.repeats), median_ms(forward_backward, opts.repeats)
        print(
            f"\n{layout}: no-grad pass {fwd:.0f} ms ({gflop / fwd * 1000:.0f} GFLOP/s), "
            f"forward+backward {fwd_bwd:.0f} ms ({3 * gflop / fwd_bwd * 1000:.0f} GFLOP/s)"
        )
        print(f"  floor of our SAC step (2.5 no-grad + 1 fwd/bwd):           {2.5 * fwd + fwd_bwd:.0f} ms")
        print(f"  floor of the original's SAC step (3 no-grad + 1 fwd/bwd):  {3 * fwd + fwd_bwd:.0f} ms")


if __name__ == "__main__":
    main()
