#!/usr/bin/env bash
# The pretraining row of the study (issue 8, docs/results.md "Pretraining on ML45"), one command:
#
#   bash scripts/ml45_pretraining.sh OUT [--pre-demos 20] [--ft-demos 10] [--pre-steps 2000] [--ft-steps 1500]
#                                        [--episodes 50] [--threads 1]
#
# 1. collect scripted demonstrations of the 45 Meta-World ML45 training tasks (--pre-demos per task) and of
#    the 5 held-out test tasks (--ft-demos per task, a different collection);
# 2. pretrain `cpu-small` on the 45 training tasks with the world-model + WAM mix (flow.world_model_prob=0.5);
# 3. fine-tune the pretrained weights on the test-task demonstrations (action-centered objective), and train
#    the same network on the same demonstrations from scratch with the same budget (--ft-steps);
# 4. evaluate both in closed loop on --episodes fresh layouts per test task (seeds 1,000,000 + i).
#
# Stages run one after another on --threads threads each; a stage whose output exists is skipped, so a stopped run
# is resumed by running the command again (training resumes from its latest checkpoint).
set -euo pipefail

USAGE="usage: bash scripts/ml45_pretraining.sh OUT [--pre-demos N] [--ft-demos N] [--pre-steps N] [--ft-steps N] [--episodes N] [--threads N]"
OUT="" PRE_DEMOS=20 FT_DEMOS=10 PRE_STEPS=2000 FT_STEPS=1500 EPISODES=50 THREADS=1
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) echo "$USAGE"; exit 0 ;;
    --pre-demos|--ft-demos|--pre-steps|--ft-steps|--episodes|--threads)
      [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "$1: expected a positive integer, got '${2:-}'" >&2; exit 2; }
      case $1 in
        --pre-demos) PRE_DEMOS=$2 ;; --ft-demos) FT_DEMOS=$2 ;; --pre-steps) PRE_STEPS=$2 ;;
        --ft-steps) FT_STEPS=$2 ;; --episodes) EPISODES=$2 ;; --threads) THREADS=$2 ;;
      esac
      shift 2 ;;
    -*) echo "unknown option $1; $USAGE" >&2; exit 2 ;;
    *) [ -z "$OUT" ] || { echo "one OUT folder, got '$OUT' and '$1'; $USAGE" >&2; exit 2; }; OUT=$1; shift ;;
  esac
done
[ -n "$OUT" ] || { echo "$USAGE" >&2; exit 2; }
export OMP_NUM_THREADS=$THREADS
mkdir -p "$OUT"

collect() {  # TASKS DEMOS DIR
  [ -d "$3" ] || gwp collect --env metaworld --tasks "$1" --episodes "$2" --cameras corner2 --image-size 64 --out "$3"
}
train() {  # RUN STEPS ARGS...: skipped when the run's final checkpoint exists, resumed when one exists
  local run=$1 steps=$2; shift 2
  [ -d "$run/checkpoints/step_$(printf %08d "$steps")" ] && return
  [ -e "$run/latest" ] && set -- "$@" --resume
  gwp train --preset cpu-small --out "$run" --steps "$steps" --no-progress "$@"
}
evaluate() {  # RUN EVAL_DIR
  [ -f "$2/report.json" ] || gwp eval --checkpoint "$1" --env metaworld --tasks ML45-test --episodes "$EPISODES" \
    --seed 0 --replan-every 8 --out "$2"
}

collect ML45-train "$PRE_DEMOS" "$OUT/train$PRE_DEMOS"
collect ML45-test "$FT_DEMOS" "$OUT/test$FT_DEMOS"
train "$OUT/pre" "$PRE_STEPS" --data "$OUT/train$PRE_DEMOS" --set flow.world_model_prob=0.5
if [ -e "$OUT/ft/latest" ]; then  # a resumed fine-tuning run restores its own weights
  train "$OUT/ft" "$FT_STEPS" --data "$OUT/test$FT_DEMOS"
else
  train "$OUT/ft" "$FT_STEPS" --data "$OUT/test$FT_DEMOS" --init "$OUT/pre"
fi
train "$OUT/scratch" "$FT_STEPS" --data "$OUT/test$FT_DEMOS"
evaluate "$OUT/ft" "$OUT/eval_ft"
evaluate "$OUT/scratch" "$OUT/eval_scratch"
python "$(dirname "$0")/pool_eval.py" "$OUT/eval_ft/report.json"
python "$(dirname "$0")/pool_eval.py" "$OUT/eval_scratch/report.json"
