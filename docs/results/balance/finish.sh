#!/usr/bin/env bash
# Issue 39: what each run of launch.sh gets at its end, while its checkpoint is on the machine.
#   finish.sh SCRIPT RUN_NAME...      (e.g. finish.sh sgqn.py cartpole-balance__sgqn11x16__2)
# For each run, in order: wait until its summary.json says finished, then evaluate the final checkpoint on
# the five DMC-GB modes, 10 episodes each (eval_checkpoint_step{N}.csv and _saliency.csv in the run folder),
# then draw the saliency figure of its first episode per mode and measure the mask over the same 10 episodes
# (saliency_figure_step{N}.png, and .csv: a line per mode and episode, in the run folder); then copy the files
# to commit into docs/results/balance/runs/RUN_NAME. The evaluation runs from the same frozen worktree as
# launch.sh (FROZEN); the figure from one at 0b03877 (FIGURE_TREE, made here if missing), the first
# saliency_figure.py with --episodes (its episodes are --eval-checkpoint's at 2663e7e for the five modes in this
# order). THREADS sets the threads (default 1).
set -e
script=$1; shift
frozen=${FROZEN:-/work/frozen39} figure_tree=${FIGURE_TREE:-/work/frozen_fig2}
runs=/work/study39/runs
[ -d "$figure_tree" ] || git -C /work/main worktree add "$figure_tree" 0b03877
export OMP_NUM_THREADS=${THREADS:-1} MUJOCO_GL=egl
for run in "$@"; do
  until grep -q '"finished"' "$runs/$run/summary.json" 2>/dev/null; do sleep 30; done
  (cd "$frozen" && /work/main/.venv/bin/python "$script" --eval-checkpoint "$runs/$run/checkpoint.pt" --eval-episodes 10 \
    --eval-modes train color_easy color_hard video_easy video_hard > "$runs/$run/eval_checkpoint.log" 2>&1)
  (cd "$figure_tree" && /work/main/.venv/bin/python experiments/saliency_figure.py "$runs/$run/checkpoint.pt" --episodes 10 \
    --modes train color_easy color_hard video_easy video_hard > "$runs/$run/saliency_figure.log" 2>&1)
  kept=/work/main/docs/results/balance/runs/$run
  mkdir -p "$kept"
  cp "$runs/$run"/{args.json,evaluations.csv,saliency.csv,summary.json} "$runs/$run"/events.out.tfevents.* \
    "$runs/$run"/eval_checkpoint_step*.csv "$runs/$run"/saliency_figure_step*.csv "$kept/"
done
