#!/usr/bin/env bash
# Issue 31 item 1: the paper's network (11 x 32, projection 100, hidden 1024, batch 128, fp32), SGQN and DrQ
# (K = M = 1), cartpole-swingup, 100k frames, seed 1, five modes every 10k frames, 10 episodes.
# From a frozen worktree at commit 07d44c7 (tag study31-restart), made here if missing; the run folders live in
# /work/study31/runs. Relaunching the same command resumes both runs from their checkpoints (replay buffer saved);
# `launch.sh --status` only reports. (The first attempt, at a8a74c5, lost its run folders with its machine.)
set -e
[ -d /work/frozen ] || git -C /work/main worktree add /work/frozen 07d44c7
cd /work/frozen
export OMP_NUM_THREADS=1 MUJOCO_GL=egl
exec /work/venv/bin/python experiments/sweep.py --methods "sgqn=sgqn.py" "drq=sac_baseline.py --augmentation shift" \
  --env-ids cartpole-swingup --seeds 1 --runs-dir /work/study31/runs --parallel 2 --cluster local "$@" -- \
  --total-timesteps 12500 --eval-freq 1250 --save-freq 1250 --save-buffer --keep-checkpoints --eval-episodes 10
