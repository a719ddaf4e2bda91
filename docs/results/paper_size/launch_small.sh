#!/usr/bin/env bash
# Issue 31 item 2 at the small size: SGQN and DrQ (K = M = 1) with the 4 x 16 preset on cartpole-swingup, 20k frames,
# seed 1, five modes every 5k frames with 1 episode each: enough for where the saliency mask lands early in training
# (saliency.csv, written at each evaluation). From a frozen worktree at f568bb6 (tag study31-small), made here if missing; relaunching resumes.
set -e
[ -d /work/frozen_small ] || git -C /work/main worktree add /work/frozen_small f568bb6
cd /work/frozen_small
export OMP_NUM_THREADS=1 MUJOCO_GL=egl
exec /work/venv/bin/python experiments/sweep.py --methods "sgqn=sgqn.py" "drq=sac_baseline.py --augmentation shift" \
  --env-ids cartpole-swingup --seeds 1 --runs-dir /work/study31/small_runs --parallel 2 --cluster local "$@" -- \
  --num-conv-layers 4 --num-filters 16 --projection-dim 50 --hidden-dim 1024 --batch-size 128 \
  --total-timesteps 2500 --buffer-size 2600 --eval-freq 625 --eval-episodes 1 --save-freq 625 --save-buffer --keep-checkpoints
