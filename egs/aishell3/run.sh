#!/usr/bin/env bash
# AISHELL-3 (OpenSLR 93): 44.1 kHz Mandarin, 218 speakers. Trains grvq24k on the train part less 4 speakers
# (dev), scores every utterance of the official test part against Opus and Codec2, extracts tokens.
#   ./run.sh                                            everything, training on one GPU
#   ./run.sh --stage 1 --corpus_dir /data/aishell3      a copy already on disk (holds spk-info.txt, train/, test/)
# Options: ./run.sh --help (these values override recipes/codec.sh's defaults; yours override these).
set -euo pipefail

./codec.sh \
  --ngpu 1 \
  --nj 8 \
  --corpus_dir downloads/aishell3 \
  --train_set train --valid_set dev --test_sets test \
  --train_config conf/grvq24k.yaml \
  --min_seconds 1.0 --max_seconds 15 \
  --bitrates all \
  --baselines opus,codec2 \
  --token_format npy \
  "$@"
