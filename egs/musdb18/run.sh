#!/usr/bin/env bash
# MUSDB18-HQ: 150 stereo 44.1 kHz music tracks, stems mixed (mixture.wav). Trains grvq44k (mono) on 86 train
# tracks, validates on musdb's 14 validation tracks, scores the 50 test tracks against Opus, extracts tokens.
# Whole tracks (2-10 min) are kept: training takes random crops, so no length limit (--max_seconds 0).
#   ./run.sh                                            everything, training on one GPU
#   ./run.sh --stage 1 --corpus_dir /data/musdb18hq     a copy already on disk (holds train/, test/)
# Options: ./run.sh --help (these values override recipes/codec.sh's defaults; yours override these).
set -euo pipefail

./codec.sh \
  --ngpu 1 \
  --nj 8 \
  --corpus_dir downloads/musdb18hq \
  --train_set train --valid_set dev --test_sets test \
  --train_config conf/grvq44k.yaml \
  --min_seconds 5 --max_seconds 0 \
  --bitrates all \
  --baselines opus \
  --eval_args '--content music' \
  --token_format npy \
  "$@"
