#!/usr/bin/env bash
# The small pair's SGQN run again (launch_small.sh's SGQN alone; its first run's folder was lost at 15k frames), on both
# cores. As run on 2026-12-02: from nothing with OMP_NUM_THREADS=1, stopped (SIGTERM) at update 100 of its first-updates
# burst, then relaunched as below (two threads), which resumed it; run files in small_rerun/.
set -e
[ -d /work/frozen_small ] || git -C /work/main worktree add /work/frozen_small f568bb6
cd /work/frozen_small
export OMP_NUM_THREADS=2 MUJOCO_GL=egl
exec /work/venv/bin/python experiments/sweep.py --methods "sgqn=sgqn.py" \
  --env-ids cartpole-swingup --seeds 1 --runs-dir /work/study31/small_runs --parallel 1 --cluster local "$@" -- \
  --num-conv-layers 4 --num-filters 16 --projection-dim 50 --hidden-dim 1024 --batch-size 128 \
  --total-timesteps 2500 --buffer-size 2600 --eval-freq 625 --eval-episodes 1 --save-freq 625 --save-buffer --keep-checkpoints
