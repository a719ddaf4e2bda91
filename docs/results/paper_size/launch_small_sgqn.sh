#!/usr/bin/env bash
# The small pair's SGQN run again (launch_small.sh's SGQN alone; its first run's folder was lost at 15k frames), on both
# cores. As run on 2026-12-02: from nothing with THREADS=1, stopped (SIGTERM) at update 100 of its first-updates burst,
# then relaunched as below (two threads), which resumed it; run files in small_rerun/. COMMIT (default f568bb6), FROZEN,
# RUNS (default runs/paper_size_small in this repository: the run folder launch_small.sh makes), PYTHON and DRY_RUN as
# in launch_small.sh; THREADS default 2: the run alone on 2 cores.
set -e
repo=$(cd "$(dirname "$0")/../../.." && pwd)
python=${PYTHON:-$([ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3)}
runs=${RUNS:-$repo/runs/paper_size_small}
commit=${COMMIT-f568bb6}
tree=$repo
if [ -n "$commit" ]; then
  tree=${FROZEN:-$repo/.frozen/$commit}
  [ -d "$tree" ] || [ "$DRY_RUN" = 1 ] || git -C "$repo" worktree add "$tree" "$commit"
fi
export OMP_NUM_THREADS=${THREADS:-2} MUJOCO_GL=egl
cmd=("$python" experiments/sweep.py --methods "sgqn=sgqn.py"
  --env-ids cartpole-swingup --seeds 1 --runs-dir "$runs" --parallel 1 --cluster local "$@" --
  --num-conv-layers 4 --num-filters 16 --projection-dim 50 --hidden-dim 1024 --batch-size 128
  --total-timesteps 2500 --buffer-size 2600 --eval-freq 625 --eval-episodes 1 --save-freq 625 --save-buffer --keep-checkpoints)
if [ "$DRY_RUN" = 1 ]; then
  echo "cd $(printf '%q' "$tree") && OMP_NUM_THREADS=$OMP_NUM_THREADS MUJOCO_GL=egl$(printf ' %q' "${cmd[@]}")"
  exit 0
fi
cd "$tree"
exec "${cmd[@]}"
