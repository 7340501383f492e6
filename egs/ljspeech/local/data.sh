#!/usr/bin/env bash
# LJ Speech 1.1 (public domain): 24 h, 13100 clips of one English speaker reading non-fiction, 22.05 kHz.
# Source: https://keithito.com/LJ-Speech-Dataset/ ; stage 0 downloads LJSpeech-1.1.tar.bz2 with lhotse
# (lhotse.recipes.download_ljspeech, pip install 'codec[recipes]').
#
# Layout under --corpus_dir (the folder that holds LJSpeech-1.1/):
#   LJSpeech-1.1/wavs/LJ<chapter>-<nnnn>.wav          e.g. LJ001-0001.wav
#   LJSpeech-1.1/metadata.csv                          lines: LJ001-0001|raw transcript|normalized transcript
#   LJSpeech-1.1/README
# A copy already on disk: ./run.sh --stage 1 --corpus_dir /data/corpora (the folder that holds LJSpeech-1.1/).
#
# No official split: of the ids in sorted order, the last --num_test are test, the --num_dev before them dev.
# Writes data/{train,dev,test}/{wav.scp,utt2spk,spk2utt,text} (speaker LJ; text = the normalized transcript).
set -euo pipefail

# begin options
stage=0                 # 0: download, 1: write the data dirs
stop_stage=1            # last stage
corpus_dir=downloads    # the folder that holds (or will hold) LJSpeech-1.1/
data_dir=data           # where the data dirs go
num_dev=250             # utterances of the dev set
num_test=250            # utterances of the test set
python=python           # Python with lhotse (stage 0 only)
# end options
. utils/parse_options.sh

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  if [ ! -f "$corpus_dir/LJSpeech-1.1/metadata.csv" ]; then
    "$python" -c 'import lhotse' 2>/dev/null || { echo "local/data.sh: downloading needs lhotse; pip install 'codec[recipes]'" >&2; exit 1; }
    "$python" -c 'import sys; from lhotse.recipes import download_ljspeech; download_ljspeech(sys.argv[1])' "$corpus_dir"
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  root=$(readlink -f "$corpus_dir/LJSpeech-1.1")
  [ -f "$root/metadata.csv" ] || { echo "local/data.sh: $root/metadata.csv not found; run stage 0 or pass --corpus_dir" >&2; exit 1; }
  tmp=$data_dir/local/ljspeech
  mkdir -p "$tmp"
  awk -F'|' -v root="$root" '{print $1, root "/wavs/" $1 ".wav"}' "$root/metadata.csv" | LC_ALL=C sort > "$tmp/wav.scp"
  awk -F'|' '{print $1, (NF >= 3 && $3 != "") ? $3 : $2}' "$root/metadata.csv" | LC_ALL=C sort > "$tmp/text"
  total=$(wc -l < "$tmp/wav.scp")
  if [ "$total" -le $((num_dev + num_test)) ]; then
    echo "local/data.sh: $total utterances cannot give $num_dev dev and $num_test test ones; lower --num_dev/--num_test" >&2; exit 1
  fi
  ntrain=$((total - num_dev - num_test))
  head -n "$ntrain" "$tmp/wav.scp" > "$tmp/train.ids"
  sed -n "$((ntrain + 1)),$((ntrain + num_dev))p" "$tmp/wav.scp" > "$tmp/dev.ids"
  tail -n "$num_test" "$tmp/wav.scp" > "$tmp/test.ids"
  for set in train dev test; do
    dir=$data_dir/$set
    mkdir -p "$dir"
    cp "$tmp/$set.ids" "$dir/wav.scp"
    awk '{print $1, "LJ"}' "$dir/wav.scp" > "$dir/utt2spk"
    awk 'NR == FNR { want[$1] = 1; next } ($1 in want)' "$dir/wav.scp" "$tmp/text" > "$dir/text"
    utils/fix_data_dir.py "$dir"
  done
fi
