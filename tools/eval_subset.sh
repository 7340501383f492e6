#!/usr/bin/env bash
# Score a model on the fixed dev subset (egs/folder/conf/dev_subset.txt: 60 speech + 15 music clips) at 1, 3 and
# 6 kbps: PESQ-WB, STOI, SI-SDR, mel distance and output level, plus the per-level health report.
#   tools/eval_subset.sh MODEL OUT_DIR [DEV_ROOT] [extra codec eval options...]
# MODEL: a model file, a shipped model name, or a training output dir / step_*.pt (exported first).
# DEV_ROOT defaults to ../shared/data/dev beside the repository. Runs in a few minutes on 2 cores.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
model="${1:?usage: tools/eval_subset.sh MODEL OUT_DIR [DEV_ROOT] [codec eval options]}"
out="${2:?usage: tools/eval_subset.sh MODEL OUT_DIR [DEV_ROOT] [codec eval options]}"
root="${3:-$here/../shared/data/dev}"
shift $(( $# < 3 ? $# : 3 ))
[ -d "$root" ] || { echo "eval_subset.sh: dev folder '$root' not found; pass it as the third argument" >&2; exit 1; }
mkdir -p "$out"
case "$model" in
  *.safetensors) ;;
  *.pt|*/) codec export "$model" "$out/model.safetensors" >/dev/null; model="$out/model.safetensors" ;;
  *) if [ -d "$model" ]; then codec export "$model" "$out/model.safetensors" >/dev/null; model="$out/model.safetensors"; fi ;;
esac
grep -v '^#' "$here/egs/folder/conf/dev_subset.txt" | while read -r rel; do
  [ -n "$rel" ] && printf '%s %s\n' "$(echo "${rel%.*}" | tr '/' '_')" "$root/$rel"
done > "$out/wav.scp"
codec eval --data "$out/wav.scp" --model "$model" --out "$out" --bitrates 1,3,6 --baselines none \
  --metrics pesq_wb,stoi,si_sdr,mel_distance,level_db --content auto --listen-clips 0 --quiet "$@"
