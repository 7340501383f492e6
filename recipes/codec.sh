#!/usr/bin/env bash
# The staged codec recipe shared by every egs/<dataset>/run.sh (linked there as ./codec.sh; never copy it).
#
#   0 download     local/data.sh --stage 0: fetch the corpus into --corpus_dir (skipped when it is there)
#   1 data prep    local/data.sh --stage 1: Kaldi data dirs data/<set>/{wav.scp,utt2spk,text,...}
#   2 format       resample to the model rate (soxr), mix down, drop too short/long: dump/<set> with utt2dur
#   3 train        python -m codec train (torchrun --nproc_per_node ngpu when --ngpu > 1); resumes by itself
#   4 export       python -m codec export -> exp/<tag>/model.safetensors
#   5 decode       codec encode / codec decode of every test utterance at each bitrate (one call per set)
#   6 score        codec eval on every test set; writes RESULTS.md from its summary (a baseline whose tool is not
#                  installed is not run: one warning line naming the package, "not run" rows in RESULTS.md)
#   7 tokens       codec tokens on the token sets
#   8 entropy      codec fit-entropy on the train set's codes (all levels) -> exp/<tag>/model.entropy, the tables
#                  of `codec encode --entropy` (docs/ENTROPY.md); copy it beside the model file when you ship it
#
# Run from the recipe dir (egs/<dataset>), normally through ./run.sh. Every finished step leaves a .done
# marker (data/.stageN.done, dump/<set>/.done, exp/<tag>/.<step>.done ...); a rerun skips it, so delete a
# marker to redo that step. Options below; ./run.sh --help lists them with the recipe's values.
# local/data.sh takes --stage, --stop_stage, --corpus_dir, --data_dir, --python and its own --local_data_opts.
set -eEuo pipefail

# shellcheck disable=SC2034  # read by parse_options.sh
help_message="Usage: ./run.sh [options]   (or: ./codec.sh [options] from a recipe dir)"

# begin options
stage=0                  # first stage: 0 download, 1 data prep, 2 format, 3 train, 4 export, 5 decode, 6 score, 7 tokens, 8 entropy
stop_stage=100           # last stage to run
ngpu=0                   # GPUs for training: 0 = CPU, 1 = one GPU, >1 = torchrun with one process per GPU
nj=4                     # parallel jobs for formatting, decoding and scoring
python=python            # the Python that has the codec package installed
corpus_dir=downloads     # where the corpus is, or is downloaded to
local_data_opts=         # extra options for local/data.sh (e.g. "--train_parts train-clean-360")
data_dir=data            # Kaldi data dirs written by local/data.sh
dump_dir=dump            # formatted (resampled, filtered) data dirs
exp_dir=exp              # experiment dirs
train_set=train          # data set to train on
valid_set=dev            # held-out data set for validation during training
test_sets="test"         # data sets to decode and score (space-separated)
train_config=conf/grvq16k.yaml  # training config (model, data, train, discriminator, loss)
train_args=              # extra dotted overrides for codec train, e.g. "train.max_steps=1000 train.batch_size=8"
init_model=              # fine-tune: start training from this model file or checkpoint (e.g. grvq16k, a shipped one)
tag=                     # experiment name; default: the train config's file name
min_seconds=0.5          # stage 2 drops train/valid utterances shorter than this (seconds)
max_seconds=30           # stage 2 drops train/valid utterances longer than this (seconds; 0 = no limit)
max_test_utts=0          # stage 2 keeps this many utterances of each test set, spread over it (0 = all, the recipes' choice)
bitrates=all             # kbps for decoding and scoring, comma-separated, or all of the model's
baselines=opus,codec2    # classical codecs scored beside the model in stage 6 (none = none; one not installed: not run, said so)
eval_args=               # extra options for codec eval (e.g. "--metrics si_sdr,mel_distance")
token_sets=              # data sets for stage 7 (default: the train, valid and test sets)
token_bitrate=           # kbps of the extracted tokens (default: the model's highest)
token_format=npy         # npy | ark | packed
recipe_name=             # name used in RESULTS.md (default: the recipe dir's name)
results_note=            # a sentence added to RESULTS.md (e.g. how short the run was)
# end options

export PYTHONUNBUFFERED=1  # progress lines reach the log as they are printed
recipes_dir=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)
utils=$recipes_dir/utils
all_args=("$@")
. "$utils/parse_options.sh"
if [ $# -gt 0 ]; then
  echo "codec.sh: unexpected argument '$1'; options look like --name value (see --help)" >&2
  exit 1
fi

current_stage=setup
log() { echo "$(date '+%Y-%m-%d %H:%M:%S') [codec.sh stage $current_stage] $*"; }
on_error() {
  local code=$?
  local resume=(./codec.sh)
  local skip=false a
  for a in "${all_args[@]}"; do  # drop an earlier --stage and its value
    if $skip; then skip=false; continue; fi
    case "$a" in --stage) skip=true; continue ;; --stage=*) continue ;; esac
    resume+=("$a")
  done
  echo "$(date '+%Y-%m-%d %H:%M:%S') [codec.sh stage $current_stage] failed (exit $code, line $1); fix the problem above, then resume with:" >&2
  if [[ $current_stage =~ ^[0-9]+$ ]]; then
    echo "  ./run.sh --stage $current_stage    # with the options you gave before; exactly:" >&2
    echo "  cd $(printf %q "$PWD") && $(printf '%q ' "${resume[@]}")--stage $current_stage" >&2
  fi
  exit "$code"
}
trap 'on_error $LINENO' ERR

stage_start=0
begin_stage() {  # begin_stage N TITLE: true if stage N is selected
  if [ "$1" -lt "$stage" ] || [ "$1" -gt "$stop_stage" ]; then return 1; fi
  current_stage=$1
  stage_start=$(date +%s)
  log "$2"
}
end_stage() {
  local seconds=$(( $(date +%s) - stage_start ))
  log "finished in ${seconds} s"
  mkdir -p "$exp"
  echo "$current_stage $seconds $(date '+%Y-%m-%dT%H:%M:%S')" >> "$exp/stage_times.txt"
}
done_or() {  # done_or MARKER: true (and a log line) if the step that writes MARKER already finished
  if [ -f "$1" ]; then log "skipped: $1 exists (delete it to redo this step)"; return 0; fi
  return 1
}
mark_done() { mkdir -p "$(dirname "$1")"; date '+%Y-%m-%d %H:%M:%S' > "$1"; }

if [ ! -f "$train_config" ]; then
  echo "codec.sh: train config $train_config not found; pass --train_config conf/NAME.yaml (see conf/)" >&2
  exit 1
fi
[ -n "$tag" ] || tag=$(basename "${train_config%.*}")
[ -n "$recipe_name" ] || recipe_name=$(basename "$PWD")
[ -n "$token_sets" ] || token_sets="$train_set $valid_set $test_sets"
exp=$exp_dir/$tag
model=$exp/model.safetensors
read -r -a overrides <<< "$train_args"
eval "local_opts=($local_data_opts)"  # keeps quoted values together: --train_parts 'a b'
eval "eval_opts=($eval_args)"
model_facts=$("$python" -c '
import sys
from codec.train.config import load_config
from codec.errors import CodecError
try:
    c = load_config(sys.argv[1], sys.argv[2:]).model
except CodecError as e:
    sys.exit(f"codec.sh: {e}")
print(c.sample_rate, c.channels)' "$train_config" "${overrides[@]}")
read -r sample_rate channels <<< "$model_facts"
log "recipe $recipe_name, config $train_config ($sample_rate Hz, $channels channel(s)), experiment $exp"

model_bitrates() {  # the model's bitrates in kbps, comma-separated
  "$python" -m codec info "$model" --json | "$python" -c 'import json, sys; print(",".join(f"{b:g}" for b in json.load(sys.stdin)["bitrates_kbps"]))'
}

if begin_stage 0 "download the corpus into $corpus_dir"; then
  if ! done_or "$data_dir/.stage0.done"; then
    local/data.sh --stage 0 --stop_stage 0 --corpus_dir "$corpus_dir" --data_dir "$data_dir" --python "$python" "${local_opts[@]}"
    mark_done "$data_dir/.stage0.done"
  fi
  end_stage
fi

if begin_stage 1 "data preparation: $data_dir/{$train_set,$valid_set,${test_sets// /,}}"; then
  if ! done_or "$data_dir/.stage1.done"; then
    local/data.sh --stage 1 --stop_stage 1 --corpus_dir "$corpus_dir" --data_dir "$data_dir" --python "$python" "${local_opts[@]}"
    for set in $train_set $valid_set $test_sets; do
      "$python" "$utils/validate_data_dir.py" --no-audio "$data_dir/$set"
    done
    mark_done "$data_dir/.stage1.done"
  fi
  end_stage
fi

if begin_stage 2 "format: resample to $sample_rate Hz, $channels channel(s); keep ${min_seconds}..${max_seconds} s (0 = any) for training"; then
  for set in $train_set $valid_set $test_sets; do
    dest=$dump_dir/$set
    done_or "$dest/.done" && continue
    src=$data_dir/$set limits=(--min-seconds 0 --max-seconds 0)
    if [ "$set" = "$train_set" ] || [ "$set" = "$valid_set" ]; then
      limits=(--min-seconds "$min_seconds" --max-seconds "$max_seconds")
    elif [ "$max_test_utts" -gt 0 ]; then
      src=$dump_dir/.subsets/$set
      "$python" "$utils/subset_data_dir.py" "$data_dir/$set" "$max_test_utts" "$src"
    fi
    "$python" "$utils/format_data.py" --sample-rate "$sample_rate" --channels "$channels" --nj "$nj" "${limits[@]}" "$src" "$dest"
    "$python" "$utils/validate_data_dir.py" --need utt2dur "$dest"
    mark_done "$dest/.done"
  done
  end_stage
fi

if begin_stage 3 "train $exp on $dump_dir/$train_set ($ngpu GPU(s))"; then
  if ! done_or "$exp/.train.done"; then
    mkdir -p "$exp"
    device=cuda; [ "$ngpu" -gt 0 ] || device=cpu
    args=(--config "$train_config" "data.train_dir=$dump_dir/$train_set" "data.valid_dir=$dump_dir/$valid_set"
          "train.output_dir=$exp" "train.device=$device")
    [ -z "$init_model" ] || args+=("train.init_from=$init_model")
    args+=("${overrides[@]}")  # --train_args come last and win
    if compgen -G "$exp/checkpoints/step_*.pt" > /dev/null; then
      log "checkpoints found in $exp/checkpoints: resuming"
      args+=(--resume)
    fi
    if [ "$ngpu" -gt 1 ]; then
      launcher=(torchrun --standalone --nproc_per_node "$ngpu" -m codec train)
    else
      launcher=("$python" -m codec train)
    fi
    log "${launcher[*]} ${args[*]}  (log: $exp/train.log)"
    "${launcher[@]}" "${args[@]}" 2>&1 | tee -a "$exp/train.log"
    mark_done "$exp/.train.done"
  fi
  end_stage
fi

if begin_stage 4 "export $model"; then
  if ! done_or "$exp/.export.done"; then
    "$python" -m codec export "$exp" "$model"
    "$python" -m codec info "$model" > "$exp/model_info.txt"
    mark_done "$exp/.export.done"
  fi
  end_stage
fi

if begin_stage 5 "decode ${test_sets// /, } at ${bitrates} kbps with $model"; then
  rates=$bitrates
  [ "$rates" != all ] || rates=$(model_bitrates)
  for set in $test_sets; do
    for kbps in ${rates//,/ }; do
      out=$exp/decode_${set}_${kbps}kbps
      done_or "$out/.done" && continue
      rm -rf "$out/codes" "$out/wav"
      mkdir -p "$out"
      # one call per direction for the whole set: the model loads once in each of the nj processes
      "$python" -m codec encode "$dump_dir/$set" "$out/codes" --model "$model" --bitrate "$kbps" --jobs "$nj"
      "$python" -m codec decode "$out/codes" "$out/wav" --model "$model" --jobs "$nj"
      wav_dir=$(cd "$out/wav" && pwd)
      awk -v dir="$wav_dir" '{ print $1, dir "/" $1 ".wav" }' "$dump_dir/$set/utt2dur" | LC_ALL=C sort > "$out/wav.scp"
      cp "$dump_dir/$set/utt2dur" "$out/utt2dur"
      log "$out: $(wc -l < "$out/wav.scp") utterances"
      mark_done "$out/.done"
    done
  done
  end_stage
fi

write_results() {
  local evals=() set
  for set in $test_sets; do evals+=(--eval "$set=$exp/eval_$set"); done
  "$python" "$utils/make_results.py" --recipe "$recipe_name" --exp "$exp" --config "$train_config" \
    --train-set "$dump_dir/$train_set" --note "$results_note" "${evals[@]}" --out RESULTS.md
  log "wrote RESULTS.md"
}

if begin_stage 6 "score ${test_sets// /, } with codec eval (baselines: $baselines)"; then
  for set in $test_sets; do
    out=$exp/eval_$set
    done_or "$out/.done" && continue
    "$python" -m codec eval --data "$dump_dir/$set" --model "$model" --bitrates "$bitrates" \
      --baselines "$baselines" --missing-baselines skip --out "$out" --jobs "$nj" --quiet "${eval_opts[@]}"
    mark_done "$out/.done"
  done
  end_stage
  write_results
fi

if begin_stage 7 "extract $token_format tokens of ${token_sets// /, }"; then
  kbps=$token_bitrate
  [ -n "$kbps" ] || kbps=$(model_bitrates | tr , '\n' | tail -n 1)
  for set in $token_sets; do
    out=$exp/tokens_$set
    done_or "$out/.done" && continue
    mkdir -p "$out"
    "$python" -m codec tokens --data "$dump_dir/$set" --out "$out" --model "$model" --bitrate "$kbps" \
      --format "$token_format" 2>&1 | tee "$out/tokens.log"
    mark_done "$out/.done"
  done
  end_stage
  [ ! -f RESULTS.md ] || write_results
fi

if begin_stage 8 "fit the entropy tables on the codes of $train_set -> $exp/model.entropy"; then
  out=$exp/entropy_tokens_$train_set
  if ! done_or "$exp/.entropy.done"; then
    if ! done_or "$out/.done"; then
      mkdir -p "$out"
      "$python" -m codec tokens --data "$dump_dir/$train_set" --out "$out" --model "$model" --format npy \
        2>&1 | tee "$out/tokens.log"
      mark_done "$out/.done"
    fi
    "$python" -m codec fit-entropy "$out" --model "$model" 2>&1 | tee "$exp/fit_entropy.log"
    mark_done "$exp/.entropy.done"
  fi
  end_stage
fi

current_stage="done"
log "finished stages $stage..$stop_stage"
