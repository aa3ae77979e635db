#!/usr/bin/env bash
# The README's tiny end-to-end run (docs/training.md): synthetic D^k + a small "real" set -> all four stages of
# paper §3.2 -> evaluate -> predict GIF / PNG strips / attention overlays. Budget: < 10 minutes on 2 CPU cores.
#
#   scripts/tiny_end_to_end.sh [WORK_DIR]        (default: runs/tiny-e2e under the current folder; re-running resumes)
#
# The "real" data defaults to physvid's `mixed` property (several objects, each with its own property) as a stand-in.
# REAL=video uses the highway camera of ../shared/data instead (converted by `stmoe prepare`).
# The commands run as `python -m physvid` / `python -m stmoe` (a checkout or an install alike).
set -euo pipefail
WORK=${1:-runs/tiny-e2e}
case "$WORK" in /*) ;; *) WORK="$PWD/$WORK" ;; esac  # relative to where the script was called from, not the repository
cd "$(dirname "$0")/.."
PHYSVID=${PHYSVID:-"python -m physvid"}
STMOE=${STMOE:-"python -m stmoe"}
N_SYN=${N_SYN:-960}      # sequences per synthetic property
N_REAL=${N_REAL:-480}    # "real" sequences
SIZE=32
FRAMES=8                 # l + n = 4 + 4 (preset tiny)
start=$(date +%s)
mkdir -p "$WORK/data"

# Small shapes and motions that suit 32x32 frames; noise ratio 0.26 as in the paper's ablation.
GEN="--size $SIZE --frames $FRAMES --object-size 6:12 --thickness 1:2 --speed 0.5:1.5 --noise-ratio 0.26 --quiet"
for prop in translation rotation intensity all; do
  $PHYSVID generate --property "$prop" --n "$N_SYN" --seed 1 --shard-size 240 --workers 2 $GEN --out "$WORK/data/$prop"
done
if [ "${REAL:-mixed}" = "video" ]; then
  $STMOE prepare ../shared/data/video/traffic-highway-video02.avi --frames $FRAMES --stride 4 --size $SIZE \
    --out "$WORK/data/real"
else
  $PHYSVID generate --property mixed --n "$N_REAL" --seed 2 --shard-size 240 --workers 2 $GEN --property-maps \
    --out "$WORK/data/real"
fi
# A larger held-out set of the same kind (other seed): 48 test clips are too few to tell attention alignments apart.
if [ "${REAL:-mixed}" != "video" ]; then
  $PHYSVID generate --property mixed --n "$N_REAL" --seed 3 --shard-size 240 --workers 2 $GEN --property-maps \
    --out "$WORK/data/heldout"
fi
echo "data ready after $(( $(date +%s) - start )) s"

# Stages 1-4 (decoder F^0 + H on D^all, experts on D^k with H frozen, gating, global) with the tiny preset.
$STMOE pipeline --preset tiny \
  --synthetic "$WORK/data/translation,$WORK/data/rotation,$WORK/data/intensity" --all "$WORK/data/all" \
  --real "$WORK/data/real" --out "$WORK/run" --resume
echo "pipeline done after $(( $(date +%s) - start )) s"

CKPT="$WORK/run/global/checkpoints/best.pt"
$STMOE evaluate --checkpoint "$CKPT" --data "$WORK/data/real" --out "$WORK/metrics.json"
if [ -d "$WORK/data/heldout" ]; then
  $STMOE evaluate --checkpoint "$CKPT" --data "$WORK/data/heldout" --split all --out "$WORK/heldout.json"
fi
$STMOE predict --checkpoint "$CKPT" --data "$WORK/data/real" --out "$WORK/predict" -i 0 -i 1 --scale 4
$STMOE plot "$WORK/run" --out "$WORK/curves.png"
echo "tiny end-to-end run finished in $(( $(date +%s) - start )) s: $WORK/metrics.json, $WORK/predict/, $WORK/curves.png"
