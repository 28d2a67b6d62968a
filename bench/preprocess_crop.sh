#!/usr/bin/env bash
# Decode + resize + centre-crop speed: transfuse against the peers of
# ../shared/bench/peer_crop.py (OpenCV INTER_AREA as img2dataset does it,
# Pillow with and without draft mode), same files, same run, one core,
# then transfuse on 2 threads. Prints images/s and the ratios.
#
# usage: bench/preprocess_crop.sh [BUILD_DIR] [PEER_SCRIPT]
#   BUILD_DIR   default build; PEER_SCRIPT default ../shared/bench/peer_crop.py
set -euo pipefail
build=${1:-build}
peer=${2:-$(dirname "$0")/../../shared/bench/peer_crop.py}
tf=$build/cli/transfuse
[ -x "$tf" ] || { echo "no $tf: build first" >&2; exit 2; }
[ -f "$peer" ] || { echo "no peer script at $peer" >&2; exit 2; }
root=/usr/share/backgrounds
for fmt in jpg png webp; do
  mapfile -t files < <(find "$root" -type f -name "*.$fmt" | sort)
  [ ${#files[@]} -gt 0 ] || continue
  echo "== $fmt: ${#files[@]} files"
  ours=$("$tf" preprocess bench --reps 2 "${files[@]}")
  echo "$ours"
  peers=$(taskset -c 0 /usr/bin/python3 "$peer" --reps 2 "${files[@]}")
  echo "$peers"
  ours2=$("$tf" preprocess bench --threads 2 --no-floor --reps 2 "${files[@]}")
  echo "$ours2" | grep -v '^#' | sed 's/^/threads=2 /'
  o=$(echo "$ours" | awk -F'\t' '$1=="all"{sub("images_per_s=","",$5); print $5}')
  o2=$(echo "$ours2" | awk -F'\t' '$1=="all"{sub("images_per_s=","",$5); print $5}')
  cv=$(echo "$peers" | awk '/^opencv-area/{print $2}')
  pd=$(echo "$peers" | awk '/^pillow-draft-bicubic/{print $2}')
  pf=$(echo "$peers" | awk '/^pillow-bicubic/{print $2}')
  awk -v o="$o" -v o2="$o2" -v cv="$cv" -v pd="$pd" -v pf="$pf" -v f="$fmt" 'BEGIN {
    printf "RATIO %s: transfuse %.1f images/s = %.2fx opencv-area, %.2fx pillow-draft, %.2fx pillow; 2 threads %.1f images/s (%.2fx 1 thread)\n",
      f, o, o / cv, o / pd, o / pf, o2, o2 / o }'
done
