#!/usr/bin/env bash
# The balance study (issues 39 and 49): what each run of launch.sh gets at its end, while its checkpoint is on the machine.
#   finish.sh SCRIPT RUN_NAME...      (e.g. finish.sh sgqn.py cartpole-balance__sgqn11x16__2)
# For each run, in order: wait until its summary.json says finished, then evaluate the final checkpoint on
# the five DMC-GB modes, 10 episodes each (eval_checkpoint_step{N}.csv and _saliency.csv in the run folder),
# then draw the saliency figure of its first episode per mode and measure the mask over the same 10 episodes
# (saliency_figure_step{N}.png, and .csv: a line per mode and episode, in the run folder); then copy the files
# to commit into docs/results/balance/runs/RUN_NAME. COMMIT, FROZEN, RUNS, PYTHON, THREADS and DRY_RUN as in
# launch.sh; the evaluation runs from launch.sh's tree, the figure from FIGURE_COMMIT's (issue 39's runs: 0b03877,
# the first saliency_figure.py with --episodes, whose episodes are --eval-checkpoint's at 2663e7e for the five
# modes in this order; default: the same tree as the evaluation), in FIGURE_TREE (default .frozen/FIGURE_COMMIT).
set -e
repo=$(cd "$(dirname "$0")/../../.." && pwd)
script=$1; shift
python=${PYTHON:-$([ -x "$repo/.venv/bin/python" ] && echo "$repo/.venv/bin/python" || echo python3)}
runs=${RUNS:-$repo/runs/balance}
tree=$repo
[ -n "$COMMIT" ] && tree=${FROZEN:-$repo/.frozen/$COMMIT}
figure_tree=$tree
[ -n "$FIGURE_COMMIT" ] && figure_tree=${FIGURE_TREE:-$repo/.frozen/$FIGURE_COMMIT}
for t in "$tree" "$figure_tree"; do
  [ -d "$t" ] || [ "$DRY_RUN" = 1 ] || git -C "$repo" worktree add "$t" "$( [ "$t" = "$tree" ] && echo "$COMMIT" || echo "$FIGURE_COMMIT")"
done
export OMP_NUM_THREADS=${THREADS:-1} MUJOCO_GL=egl
modes=(train color_easy color_hard video_easy video_hard)
for run in "$@"; do
  evaluate=("$python" "$script" --eval-checkpoint "$runs/$run/checkpoint.pt" --eval-episodes 10 --eval-modes "${modes[@]}")
  figure=("$python" experiments/saliency_figure.py "$runs/$run/checkpoint.pt" --episodes 10 --modes "${modes[@]}")
  kept=$repo/docs/results/balance/runs/$run
  if [ "$DRY_RUN" = 1 ]; then
    echo "cd $tree && ${evaluate[*]} > $runs/$run/eval_checkpoint.log"
    echo "cd $figure_tree && ${figure[*]} > $runs/$run/saliency_figure.log"
    echo "cp $runs/$run/{args.json,evaluations.csv,saliency.csv,summary.json,events.out.tfevents.*,eval_checkpoint_step*.csv,saliency_figure_step*.csv} $kept/"
    continue
  fi
  until grep -q '"finished"' "$runs/$run/summary.json" 2>/dev/null; do sleep 30; done
  (cd "$tree" && "${evaluate[@]}" > "$runs/$run/eval_checkpoint.log" 2>&1)
  (cd "$figure_tree" && "${figure[@]}" > "$runs/$run/saliency_figure.log" 2>&1)
  mkdir -p "$kept"
  cp "$runs/$run"/{args.json,evaluations.csv,saliency.csv,summary.json} "$runs/$run"/events.out.tfevents.* \
    "$runs/$run"/eval_checkpoint_step*.csv "$runs/$run"/saliency_figure_step*.csv "$kept/"
done
