#!/usr/bin/env bash
# LibriTTS (OpenSLR 60, CC BY 4.0): 585 h of 24 kHz read English speech from LibriVox audiobooks, 2456 speakers.
# Source: https://www.openslr.org/60/ ; stage 0 downloads it with lhotse (lhotse.recipes.download_libritts,
# pip install 'codec[recipes]'), which fetches <part>.tar.gz and unpacks it under --corpus_dir.
#
# Layout under --corpus_dir:
#   LibriTTS/<part>/<speaker>/<chapter>/<speaker>_<chapter>_<paragraph>_<sentence>.wav
#   LibriTTS/<part>/<speaker>/<chapter>/<speaker>_<chapter>_<paragraph>_<sentence>.normalized.txt  (one line)
#   LibriTTS/<part>/<speaker>/<chapter>/<speaker>_<chapter>_<paragraph>_<sentence>.original.txt
#   LibriTTS/<part>/<speaker>/<chapter>/<speaker>_<chapter>.trans.tsv, <speaker>_<chapter>.book.tsv
#   LibriTTS/speakers.tsv, SPEAKERS.txt, BOOKS.txt, CHAPTERS.txt, ...
# with <part> in train-clean-100, train-clean-360, train-other-500, dev-clean, dev-other, test-clean, test-other.
# A copy already on disk: ./run.sh --stage 1 --corpus_dir /data/corpora (the folder that holds LibriTTS/).
#
# Writes data/{train,dev,test}/{wav.scp,utt2spk,spk2utt,text}; utterance id = file name, speaker = its first field.
set -euo pipefail

# begin options
stage=0                          # 0: download, 1: write the data dirs
stop_stage=1                     # last stage
corpus_dir=downloads             # the folder that holds (or will hold) LibriTTS/
data_dir=data                    # where the data dirs go
train_parts=train-clean-100      # parts making up the train set (space-separated)
dev_parts=dev-clean              # parts making up the dev set
test_parts=test-clean            # parts making up the test set
python=python                    # Python with lhotse (stage 0 only)
# end options
. utils/parse_options.sh

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  missing=()
  for part in $train_parts $dev_parts $test_parts; do
    [ -d "$corpus_dir/LibriTTS/$part" ] || missing+=("$part")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    "$python" -c 'import lhotse' 2>/dev/null || { echo "local/data.sh: downloading needs lhotse; pip install 'codec[recipes]'" >&2; exit 1; }
    "$python" -c 'import sys; from lhotse.recipes import download_libritts; download_libritts(sys.argv[1], dataset_parts=sys.argv[2:])' \
      "$corpus_dir" "${missing[@]}"
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  root=$(readlink -f "$corpus_dir/LibriTTS")
  for set in train dev test; do
    parts_var=${set}_parts
    dir=$data_dir/$set
    mkdir -p "$dir"
    : > "$dir/wav.scp"; : > "$dir/text"
    for part in ${!parts_var}; do
      [ -d "$root/$part" ] || { echo "local/data.sh: $root/$part not found; run stage 0 or pass --corpus_dir" >&2; exit 1; }
      find "$root/$part" -name '*.wav' | awk '{id=$0; sub(/.*\//, "", id); sub(/\.wav$/, "", id); print id, $0}' >> "$dir/wav.scp"
      find "$root/$part" -name '*.normalized.txt' -print0 |
        xargs -0 -r awk '{id=FILENAME; sub(/.*\//, "", id); sub(/\.normalized\.txt$/, "", id); print id, $0}' >> "$dir/text"
    done
    awk '{split($1, f, "_"); print $1, f[1]}' "$dir/wav.scp" > "$dir/utt2spk"
    utils/fix_data_dir.py "$dir"
  done
fi
