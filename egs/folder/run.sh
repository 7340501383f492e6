#!/usr/bin/env bash
# Any folder of audio (any rate, channels, depth of sub-folders), split by a hash of each relative path into
# train/dev/test (5% each for dev and test), or with --heldout_dir: all trains, the held-out folder gives dev/test.
#   ./run.sh --corpus_dir /data/my_audio
#   ./run.sh --corpus_dir /data/train_audio --local_data_opts "--heldout_dir /data/dev_audio"
#   ./run.sh --corpus_dir /data/my_audio --train_config conf/grvq24k.yaml --ngpu 2
# Options: ./run.sh --help (these values override recipes/codec.sh's defaults; yours override these).
set -euo pipefail

./codec.sh \
  --ngpu 1 \
  --nj 4 \
  --stage 1 \
  --train_set train --valid_set dev --test_sets test \
  --train_config conf/grvq16k.yaml \
  --min_seconds 0.5 --max_seconds 30 \
  --bitrates all \
  --baselines opus,codec2 \
  --token_format npy \
  "$@"
