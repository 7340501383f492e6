#!/usr/bin/env bash
# LJ Speech 1.1: 22.05 kHz English, one speaker. Trains grvq24k on all but the last 500 utterances
# (250 dev, 250 test), scores the test set against Opus and Codec2, extracts tokens.
#   ./run.sh                                         everything, training on one GPU
#   ./run.sh --stage 1 --corpus_dir /data/corpora    a copy already on disk (/data/corpora/LJSpeech-1.1/...)
# Options: ./run.sh --help (these values override recipes/codec.sh's defaults; yours override these).
set -euo pipefail

./codec.sh \
  --ngpu 1 \
  --nj 8 \
  --corpus_dir downloads \
  --train_set train --valid_set dev --test_sets test \
  --train_config conf/grvq24k.yaml \
  --min_seconds 1.0 --max_seconds 15 \
  --bitrates all \
  --baselines opus,codec2 \
  --token_format npy \
  "$@"
