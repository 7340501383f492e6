#!/usr/bin/env bash
# Data for the mini recipe: no download; stage 1 generates a small corpus (local/make_audio.py) and writes
# Kaldi data dirs from it.
#
# On-disk layout of the generated corpus (--corpus_dir, default downloads/mini):
#   speech/spk{1..6}/spk<N>_<nnn>.wav     speech-like clips, one folder per "speaker"
#   music/inst{1..3}/inst<N>_<nnn>.wav    music-like clips, one folder per "instrument"
# 16 kHz mono 16-bit, 1 to 2.5 s, 6 clips per folder. Clip 006 of every folder is test, 005 is dev, the rest
# train. Utterance ids are <speech|music>_<folder>_<nnn>; the folder is the speaker (utt2spk).
set -euo pipefail

# begin options
stage=0                      # 0: nothing to download; 1: generate the corpus and write the data dirs
stop_stage=1                 # last stage
corpus_dir=downloads/mini    # where the generated corpus goes
data_dir=data                # where the data dirs go
python=python                # Python with numpy and soundfile
# end options
. utils/parse_options.sh

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  echo "local/data.sh: the mini corpus is generated in stage 1; nothing to download"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  [ -d "$corpus_dir/speech" ] || "$python" local/make_audio.py "$corpus_dir" --clips 6
  corpus=$(readlink -f "$corpus_dir")
  for set in train dev test; do mkdir -p "$data_dir/$set"; : > "$data_dir/$set/wav.scp"; : > "$data_dir/$set/utt2spk"; done
  find "$corpus" -name '*.wav' | LC_ALL=C sort | while read -r path; do
    rel=${path#"$corpus"/}              # speech/spk1/spk1_001.wav
    kind=${rel%%/*}
    name=$(basename "$path" .wav)       # spk1_001
    spk=${name%_*} num=${name##*_}
    case "$num" in 006) set="test" ;; 005) set="dev" ;; *) set="train" ;; esac
    echo "${kind}_${name} $path" >> "$data_dir/$set/wav.scp"
    echo "${kind}_${name} $spk" >> "$data_dir/$set/utt2spk"
  done
  for set in train dev test; do
    utils/fix_data_dir.py "$data_dir/$set"
  done
fi
