#!/usr/bin/env bash
# VCTK 0.92: 48 kHz English, 110 speakers (mic1). Trains grvq24k on all but 7 held-out speakers (2 dev,
# 5 test), scores the test speakers against Opus and Codec2, extracts tokens.
#   ./run.sh                                                    everything, training on one GPU
#   ./run.sh --train_config conf/grvq48k.yaml                   the native-rate model
#   ./run.sh --stage 1 --corpus_dir /data/VCTK-Corpus-0.92      a copy already on disk
# Options: ./run.sh --help (these values override recipes/codec.sh's defaults; yours override these).
set -euo pipefail

./codec.sh \
  --ngpu 1 \
  --nj 8 \
  --corpus_dir downloads/VCTK-Corpus-0.92 \
  --train_set train --valid_set dev --test_sets test \
  --train_config conf/grvq24k.yaml \
  --min_seconds 1.0 --max_seconds 15 \
  --bitrates all \
  --baselines opus,codec2 \
  --token_format npy \
  "$@"
