#!/usr/bin/env bash
# LibriSpeech (OpenSLR 12): 16 kHz read English. Trains grvq16k on train-clean-100, validates on dev-clean,
# scores every test-clean utterance against Opus and Codec2, extracts tokens.
#   ./run.sh                                         everything, training on one GPU
#   ./run.sh --ngpu 8 --stage 3                      train on 8 GPUs (torchrun)
#   ./run.sh --stage 1 --corpus_dir /data/corpora    a copy already on disk (/data/corpora/LibriSpeech/...)
#   ./run.sh --local_data_opts "--train_parts 'train-clean-100 train-clean-360 train-other-500'"   all 960 h
# Options: ./run.sh --help (these values override recipes/codec.sh's defaults; yours override these).
set -euo pipefail

./codec.sh \
  --ngpu 1 \
  --nj 8 \
  --corpus_dir downloads \
  --train_set train --valid_set dev --test_sets test \
  --train_config conf/grvq16k.yaml \
  --min_seconds 1.0 --max_seconds 25 \
  --bitrates all \
  --baselines opus,codec2 \
  --token_format npy \
  "$@"
