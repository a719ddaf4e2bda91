#!/usr/bin/env bash
# The balance study's runs (issues 39 and 49): one run of SCRIPT on cartpole-balance, fp32, projection 100,
# hidden 1024, batch 128, the script's defaults otherwise (SGQN: rho 0.98, consistency 0.5, attribution
# predictor every 2 steps).
#   launch.sh NAME SCRIPT CONVS FILTERS SEED STEPS [extra flags...]
# Train and video_hard, 5 episodes, every 625 agent steps (5k frames); checkpoints (with the replay buffer)
# every 625 steps, each kept for the saliency figure. Relaunching the same command resumes the run from its
# checkpoint (the script's own --resume). Set by the environment (defaults inside this repository):
#   COMMIT   run the scripts of this commit, from a git worktree made for it (default: the working tree itself);
#            the study's runs used 2663e7e (seed 1 of issue 39: 1a62c24), issue 49's the commit its page names
#   FROZEN   that worktree's folder (default: .frozen/COMMIT in this repository, git-ignored)
#   RUNS     the run folders (default: runs/balance in this repository, git-ignored)
#   PYTHON   the interpreter (default: .venv/bin/python in this repository if it is there, else python3)
#   THREADS  torch's threads (default 1: two runs side by side on the 2 cores)
#   DRY_RUN  1: print the command instead of running it
set -e
repo=$(cd "$(dirname "$0")/../../.." && pwd)
name=$1 script=$2 convs=$3 filters=$4 seed=$5 steps=$6; shift 6
python=${PYTHON:-$([ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3)}
runs=${RUNS:-$repo/runs/balance} run=cartpole-balance__${name}__${seed}
tree=$repo
if [ -n "$COMMIT" ]; then
  tree=${FROZEN:-$repo/.frozen/$COMMIT}
  [ -d "$tree" ] || [ "$DRY_RUN" = 1 ] || git -C "$repo" worktree add "$tree" "$COMMIT"
fi
export OMP_NUM_THREADS=${THREADS:-1} MUJOCO_GL=egl
if [ -f "$runs/$run/checkpoint.pt" ]; then
  cmd=("$python" "$script" --resume "$runs/$run/checkpoint.pt" --runs-dir "$runs" --run-name "$run")
else
  cmd=("$python" "$script" --env-id cartpole-balance --seed "$seed" --exp-name "$name"
    --num-conv-layers "$convs" --num-filters "$filters" --projection-dim 100 --hidden-dim 1024 --batch-size 128
    --total-timesteps "$steps" --buffer-size $((steps + steps / 100 + 100)) --eval-freq 625 --eval-episodes 5
    --eval-modes train video_hard --save-freq 625 --save-buffer --keep-checkpoints
    --runs-dir "$runs" --run-name "$run" "$@")
fi
if [ "$DRY_RUN" = 1 ]; then
  echo "cd $tree && OMP_NUM_THREADS=$OMP_NUM_THREADS MUJOCO_GL=egl ${cmd[*]}"
  exit 0
fi
mkdir -p "$runs"
cd "$tree"
exec "${cmd[@]}"
