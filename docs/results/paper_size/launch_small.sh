#!/usr/bin/env bash
# Issue 31 item 2 at the small size: SGQN and DrQ (K = M = 1) with the 4 x 16 preset on cartpole-swingup, 20k frames,
# seed 1, five modes every 5k frames with 1 episode each: enough for where the saliency mask lands early in training
# (saliency.csv, written at each evaluation). Relaunching the same command resumes. Set by the environment (defaults
# inside this repository):
#   COMMIT   run the scripts of this commit, from a git worktree made for it (default f568bb6, tag study31-small,
#            the commit these runs used); COMMIT= (empty): the working tree itself
#   FROZEN   that worktree's folder (default: .frozen/COMMIT in this repository, git-ignored)
#   RUNS     the run folders (default: runs/paper_size_small in this repository, git-ignored)
#   PYTHON   the interpreter (default: .venv/bin/python in this repository if it is there, else python3)
#   THREADS  torch's threads per run (default 1: the two runs side by side on 2 cores)
#   DRY_RUN  1: print the command instead of running it
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
export OMP_NUM_THREADS=${THREADS:-1} MUJOCO_GL=egl
cmd=("$python" experiments/sweep.py --methods "sgqn=sgqn.py" "drq=sac_baseline.py --augmentation shift"
  --env-ids cartpole-swingup --seeds 1 --runs-dir "$runs" --parallel 2 --cluster local "$@" --
  --num-conv-layers 4 --num-filters 16 --projection-dim 50 --hidden-dim 1024 --batch-size 128
  --total-timesteps 2500 --buffer-size 2600 --eval-freq 625 --eval-episodes 1 --save-freq 625 --save-buffer --keep-checkpoints)
if [ "$DRY_RUN" = 1 ]; then
  # %q quotes what the shell would split (the DrQ method's flags), so the line runs as printed
  echo "cd $(printf '%q' "$tree") && OMP_NUM_THREADS=$OMP_NUM_THREADS MUJOCO_GL=egl$(printf ' %q' "${cmd[@]}")"
  exit 0
fi
cd "$tree"
exec "${cmd[@]}"
