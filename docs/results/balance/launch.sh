#!/usr/bin/env bash
# Issue 39: SGQN and DrQ (K = M = 1) on cartpole-balance, fp32, projection 100, hidden 1024, batch 128,
# the scripts' defaults otherwise (SGQN: rho 0.98, consistency 0.5, attribution predictor every 2 steps).
#   launch.sh NAME SCRIPT CONVS FILTERS SEED STEPS [extra flags...]
# One run per call, one thread (run two side by side on the 2 cores; THREADS=2 for one run on both). Train and video_hard, 5 episodes, every 625
# agent steps (5k frames); checkpoints (with the replay buffer) every 625 steps, each kept for the saliency figure.
# From a frozen worktree at 2663e7e (made here if missing; seed 1 ran at 1a62c24, whose sgqn.py and sac_baseline.py
# differ only by the --track flags and the logged losses/qf1_spread); the run folders live in /work/study39/runs. Relaunching the same
# command resumes the run from its checkpoint (sweep-free: the script's own --resume).
set -e
name=$1 script=$2 convs=$3 filters=$4 seed=$5 steps=$6; shift 6
frozen=${FROZEN:-/work/frozen39}
[ -d "$frozen" ] || git -C /work/main worktree add "$frozen" "${COMMIT:-2663e7e}"
cd "$frozen"
export OMP_NUM_THREADS=${THREADS:-1} MUJOCO_GL=egl
runs=/work/study39/runs run=cartpole-balance__${name}__${seed}
mkdir -p "$runs"
if [ -f "$runs/$run/checkpoint.pt" ]; then
  exec /work/main/.venv/bin/python "$script" --resume "$runs/$run/checkpoint.pt" --runs-dir "$runs" --run-name "$run"
fi
exec /work/main/.venv/bin/python "$script" --env-id cartpole-balance --seed "$seed" --exp-name "$name" \
  --num-conv-layers "$convs" --num-filters "$filters" --projection-dim 100 --hidden-dim 1024 --batch-size 128 \
  --total-timesteps "$steps" --buffer-size $((steps + steps / 100 + 100)) --eval-freq 625 --eval-episodes 5 \
  --eval-modes train video_hard --save-freq 625 --save-buffer --keep-checkpoints \
  --runs-dir "$runs" --run-name "$run" "$@"
