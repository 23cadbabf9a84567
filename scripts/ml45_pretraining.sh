#!/usr/bin/env bash
# The pretraining row of the study (issue 8, docs/results.md "Pretraining on ML45"), one command:
#
#   bash scripts/ml45_pretraining.sh OUT
#
# 1. collect scripted demonstrations of the 45 Meta-World ML45 training tasks (PRE_DEMOS per task) and of the
#    5 held-out test tasks (FT_DEMOS per task, a different collection);
# 2. pretrain `cpu-small` on the 45 training tasks with the world-model + WAM mix (flow.world_model_prob=0.5);
# 3. fine-tune the pretrained weights on the test-task demonstrations (action-centered objective), and train
#    the same network on the same demonstrations from scratch with the same budget (FT_STEPS);
# 4. evaluate both in closed loop on EPISODES fresh layouts per test task (seeds 1,000,000 + i).
#
# Stages run one after another on one thread each; a stage whose output exists is skipped, so a stopped run
# is resumed by running the command again (training resumes from its latest checkpoint).
set -euo pipefail

OUT=${1:?usage: bash scripts/ml45_pretraining.sh OUT}
PRE_DEMOS=${PRE_DEMOS:-20}
FT_DEMOS=${FT_DEMOS:-10}
PRE_STEPS=${PRE_STEPS:-2000}
FT_STEPS=${FT_STEPS:-1500}
EPISODES=${EPISODES:-50}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
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
