#!/usr/bin/env bash
# Any folder of audio: every .wav/.flac/.ogg/.mp3/.aiff file below --corpus_dir, at any rate and channel count,
# split deterministically into train/dev/test by the MD5 of its relative path (local/prepare_folder.py), so the
# split never changes when files are added. With --heldout_dir, all of --corpus_dir trains and the held-out
# folder is split into dev and test. Nothing to download: bring your own audio.
#
# Layout under --corpus_dir: anything, e.g.
#   speech/<source>/<name>.flac
#   music/<source>/<name>.wav
# Utterance ids are the relative paths ("speech/x/a.flac" -> "speech-x-a"); a folder named after the content
# (speech or music) also tells `codec eval` which metrics apply. Speaker (utt2spk) = the file's folder.
#   ./run.sh --corpus_dir /data/my_audio
#   ./run.sh --corpus_dir ../../../shared/data/train --local_data_opts "--heldout_dir ../../../shared/data/dev"
set -euo pipefail

# begin options
stage=0              # 0: nothing to download (checks the folder), 1: write the data dirs
stop_stage=1         # last stage
corpus_dir=          # the folder of audio (required)
heldout_dir=         # optional held-out folder: split into dev and test, and all of corpus_dir trains
data_dir=data        # where the data dirs go
dev_percent=5        # share of corpus_dir in dev (without --heldout_dir)
test_percent=5       # share of corpus_dir in test (without --heldout_dir)
python=python        # Python with soundfile
# end options
. utils/parse_options.sh

if [ -z "$corpus_dir" ] || [ ! -d "$corpus_dir" ]; then
  echo "local/data.sh: --corpus_dir '$corpus_dir' is not a folder; pass --corpus_dir DIR (a folder of audio files)" >&2
  exit 1
fi

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  echo "local/data.sh: nothing to download; audio comes from $corpus_dir${heldout_dir:+ and $heldout_dir}"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  "$python" local/prepare_folder.py "$corpus_dir" "$data_dir" ${heldout_dir:+--heldout-dir "$heldout_dir"} \
    --dev-percent "$dev_percent" --test-percent "$test_percent"
  for set in train dev test; do utils/fix_data_dir.py "$data_dir/$set"; done
fi
