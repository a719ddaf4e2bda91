#!/usr/bin/env bash
# Issue 31 item 1: the paper's network (11 x 32, projection 100, hidden 1024, batch 128, fp32), SGQN and DrQ
# (K = M = 1), cartpole-swingup, 100k frames, seed 1, five modes every 10k frames, 10 episodes; the two runs side
# by side through experiments/sweep.py. Relaunching the same command resumes both runs from their checkpoints
# (replay buffer saved); `launch.sh --status` only reports. Set by the environment (defaults inside this repository):
#   COMMIT   run the scripts of this commit, from a git worktree made for it (default 07d44c7, tag study31-restart,
#            the commit the second and third attempts ran; the first attempt's was a8a74c5); COMMIT= (empty): the
#            working tree itself
#   FROZEN   that worktree's folder (default: .frozen/COMMIT in this repository, git-ignored)
#   RUNS     the run folders (default: runs/paper_size in this repository, git-ignored)
#   PYTHON   the interpreter (default: .venv/bin/python in this repository if it is there, else python3)
#   THREADS  torch's threads per run (default 1: the two runs side by side on 2 cores)
#   DRY_RUN  1: print the command instead of running it
set -e
repo=$(cd "$(dirname "$0")/../../.." && pwd)
python=${PYTHON:-$([ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3)}
runs=${RUNS:-$repo/runs/paper_size}
commit=${COMMIT-07d44c7}
tree=$repo
if [ -n "$commit" ]; then
  tree=${FROZEN:-$repo/.frozen/$commit}
  [ -d "$tree" ] || [ "$DRY_RUN" = 1 ] || git -C "$repo" worktree add "$tree" "$commit"
fi
export OMP_NUM_THREADS=${THREADS:-1} MUJOCO_GL=egl
cmd=("$python" experiments/sweep.py --methods "sgqn=sgqn.py" "drq=sac_baseline.py --augmentation shift"
  --env-ids cartpole-swingup --seeds 1 --runs-dir "$runs" --parallel 2 --cluster local "$@" --
  --total-timesteps 12500 --eval-freq 1250 --save-freq 1250 --save-buffer --keep-checkpoints --eval-episodes 10)
if [ "$DRY_RUN" = 1 ]; then
  # %q quotes what the shell would split (the DrQ method's flags), so the line runs as printed
  echo "cd $(printf '%q' "$tree") && OMP_NUM_THREADS=$OMP_NUM_THREADS MUJOCO_GL=egl$(printf ' %q' "${cmd[@]}")"
  exit 0
fi
cd "$tree"
exec "${cmd[@]}"
