#!/usr/bin/env bash
# VCTK 0.92 (CSTR, University of Edinburgh, CC BY 4.0): 44 h of English read by 110 speakers, 48 kHz.
# Source: https://datashare.ed.ac.uk/handle/10283/3443 ; stage 0 downloads VCTK-Corpus-0.92.zip from there with
# lhotse (lhotse.recipes.download_vctk with its EDINBURGH_VCTK_URL, pip install 'codec[recipes]').
#
# Layout under --corpus_dir (the unpacked zip):
#   wav48_silence_trimmed/<speaker>/<speaker>_<nnn>_mic1.flac   (and _mic2.flac: the second microphone)
#   txt/<speaker>/<speaker>_<nnn>.txt                            (one line; p315 has no text)
#   speaker-info.txt, README.txt, update.txt
# The older 0.80 layout (wav48/<speaker>/<speaker>_<nnn>.wav) is read too.
# A copy already on disk: ./run.sh --stage 1 --corpus_dir /data/VCTK-Corpus-0.92
#
# There is no official split: --dev_speakers and --test_speakers are held out, every other speaker trains.
# Writes data/{train,dev,test}/{wav.scp,utt2spk,spk2utt,text}; utterance id = <speaker>_<nnn>.
set -euo pipefail

# begin options
stage=0                                  # 0: download, 1: write the data dirs
stop_stage=1                             # last stage
corpus_dir=downloads/VCTK-Corpus-0.92    # the unpacked corpus
data_dir=data                            # where the data dirs go
mic=mic1                                 # microphone of the 0.92 release: mic1 or mic2
dev_speakers="p345 p347"                 # speakers of the dev set
test_speakers="p360 p361 p362 p363 p364" # speakers of the test set
python=python                            # Python with lhotse (stage 0 only)
# end options
. utils/parse_options.sh

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  if [ ! -d "$corpus_dir/wav48_silence_trimmed" ] && [ ! -d "$corpus_dir/wav48" ]; then
    "$python" -c 'import lhotse' 2>/dev/null || { echo "local/data.sh: downloading needs lhotse; pip install 'codec[recipes]'" >&2; exit 1; }
    "$python" -c 'import sys; from lhotse.recipes.vctk import EDINBURGH_VCTK_URL, download_vctk; download_vctk(sys.argv[1], url=EDINBURGH_VCTK_URL)' \
      "$corpus_dir"
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  root=$(readlink -f "$corpus_dir")
  if [ -d "$root/wav48_silence_trimmed" ]; then
    audio=$root/wav48_silence_trimmed pattern="*_${mic}.flac"
  elif [ -d "$root/wav48" ]; then
    audio=$root/wav48 pattern="*.wav"
  else
    echo "local/data.sh: no wav48_silence_trimmed/ or wav48/ in $root; run stage 0 or pass --corpus_dir" >&2; exit 1
  fi
  tmp=$data_dir/local/vctk
  mkdir -p "$tmp"
  find "$audio" -name "$pattern" | awk -v mic="_$mic" '{id=$0; sub(/.*\//, "", id); sub(/\.(flac|wav)$/, "", id); sub(mic "$", "", id); print id, $0}' \
    | LC_ALL=C sort > "$tmp/wav.scp"
  find "$root/txt" -name '*.txt' -print0 2>/dev/null \
    | xargs -0 -r awk '{id=FILENAME; sub(/.*\//, "", id); sub(/\.txt$/, "", id); print id, $0}' | LC_ALL=C sort > "$tmp/text"
  for set in train dev test; do
    case $set in dev) spks=$dev_speakers ;; test) spks=$test_speakers ;; train) spks="" ;; esac
    dir=$data_dir/$set
    mkdir -p "$dir"
    awk -v spks="$spks" -v set=$set -v held="$dev_speakers $test_speakers" '
      BEGIN { n = split(spks, a, " "); for (i = 1; i <= n; i++) want[a[i]] = 1; m = split(held, b, " "); for (i = 1; i <= m; i++) out[b[i]] = 1 }
      { split($1, f, "_"); s = f[1]; if ((set == "train" && !(s in out)) || (set != "train" && (s in want))) print }' "$tmp/wav.scp" > "$dir/wav.scp"
    awk '{split($1, f, "_"); print $1, f[1]}' "$dir/wav.scp" > "$dir/utt2spk"
    # text only for the utterances that have it (p315 has none): keep them all, transcripts are optional here
    awk 'NR == FNR { want[$1] = 1; next } ($1 in want)' "$dir/wav.scp" "$tmp/text" > "$dir/text"
    [ "$(wc -l < "$dir/text")" -eq "$(wc -l < "$dir/wav.scp")" ] || rm "$dir/text"
    utils/fix_data_dir.py "$dir"
  done
fi
