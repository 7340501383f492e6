#!/usr/bin/env bash
# AISHELL-3 (OpenSLR 93, Apache 2.0): 85 h of Mandarin read by 218 speakers, 44.1 kHz, with character and pinyin
# transcripts. Source: https://www.openslr.org/93/ ; stage 0 downloads data_aishell3.tgz with lhotse
# (lhotse.recipes.download_aishell3, pip install 'codec[recipes]') and unpacks it into --corpus_dir.
#
# Layout under --corpus_dir:
#   spk-info.txt                                   speaker, age group, gender, accent (tab-separated; # comments)
#   train/wav/<speaker>/<speaker><nnnn>.wav        e.g. train/wav/SSB0005/SSB00050001.wav
#   train/content.txt                              lines: SSB00050001.wav<TAB>广 guang3 州 zhou1 ...
#   train/label_train-set.txt                      prosody labels (not used)
#   test/wav/<speaker>/<speaker><nnnn>.wav, test/content.txt
# A copy already on disk: ./run.sh --stage 1 --corpus_dir /data/aishell3
#
# train and test are the official parts (disjoint speakers); dev holds out the last --num_dev_speakers speakers
# of train (sorted ids). text = the Chinese characters of content.txt (the pinyin is dropped).
set -euo pipefail

# begin options
stage=0                          # 0: download, 1: write the data dirs
stop_stage=1                     # last stage
corpus_dir=downloads/aishell3    # the unpacked corpus (holds spk-info.txt, train/, test/)
data_dir=data                    # where the data dirs go
num_dev_speakers=4               # train speakers held out as the dev set
python=python                    # Python with lhotse (stage 0 only)
# end options
. utils/parse_options.sh

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  if [ ! -f "$corpus_dir/train/content.txt" ]; then
    "$python" -c 'import lhotse' 2>/dev/null || { echo "local/data.sh: downloading needs lhotse; pip install 'codec[recipes]'" >&2; exit 1; }
    "$python" -c 'import sys; from lhotse.recipes import download_aishell3; download_aishell3(sys.argv[1])' "$corpus_dir"
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  root=$(readlink -f "$corpus_dir")
  tmp=$data_dir/local/aishell3
  mkdir -p "$tmp"
  for part in train test; do
    [ -f "$root/$part/content.txt" ] || { echo "local/data.sh: $root/$part/content.txt not found; run stage 0 or pass --corpus_dir" >&2; exit 1; }
    find "$root/$part/wav" -name '*.wav' | awk '{id=$0; sub(/.*\//, "", id); sub(/\.wav$/, "", id); print id, $0}' | LC_ALL=C sort > "$tmp/$part.wav.scp"
    # content.txt: "<id>.wav<TAB>char pinyin char pinyin ..." -> "<id> chars"
    tr -d '\r' < "$root/$part/content.txt" | awk -F'\t' 'NF >= 2 {id = $1; sub(/\.wav$/, "", id); n = split($2, t, " "); s = ""; for (i = 1; i <= n; i += 2) s = s t[i]; print id, s}' \
      | LC_ALL=C sort > "$tmp/$part.text"
  done
  cut -c1-7 "$tmp/train.wav.scp" | LC_ALL=C sort -u | tail -n "$num_dev_speakers" > "$tmp/dev.speakers"
  for set in train dev test; do
    dir=$data_dir/$set
    mkdir -p "$dir"
    case $set in
      train) awk 'NR == FNR { held[$1] = 1; next } !(substr($1, 1, 7) in held)' "$tmp/dev.speakers" "$tmp/train.wav.scp" > "$dir/wav.scp" ;;
      dev) awk 'NR == FNR { held[$1] = 1; next } (substr($1, 1, 7) in held)' "$tmp/dev.speakers" "$tmp/train.wav.scp" > "$dir/wav.scp" ;;
      test) cp "$tmp/test.wav.scp" "$dir/wav.scp" ;;
    esac
    part="train"; [ "$set" != test ] || part="test"
    awk '{print $1, substr($1, 1, 7)}' "$dir/wav.scp" > "$dir/utt2spk"
    awk 'NR == FNR { want[$1] = 1; next } ($1 in want)' "$dir/wav.scp" "$tmp/$part.text" > "$dir/text"
    utils/fix_data_dir.py "$dir"
  done
fi
