#!/usr/bin/env bash
# Real speech from Debian packages (local/data.sh): the Asterisk core prompt sets in 16 kHz G.722, five
# professional voices (en, es, fr, it, ru), about 2.5 hours, converted to 16 kHz FLAC outside the repo.
# Dev = the prompts whose name hashes below --dev_percent (in every language), so no prompt text crosses splits;
# dev is also the scored set.
#   ./run.sh --corpus_dir /work/data/debian_speech --data_dir /work/data/debian_speech/data
#   ./run.sh --corpus_dir /work/data/debian_speech --data_dir /work/data/debian_speech/data --stage 1   # a copy
#   ./run.sh ... --ngpu 0 --train_config conf/grvq16k_cpu.yaml
# Options: ./run.sh --help (these values override recipes/codec.sh's defaults; yours override these).
set -euo pipefail

./codec.sh \
  --ngpu 1 \
  --nj 4 \
  --stage 0 \
  --corpus_dir downloads \
  --train_set train --valid_set dev --test_sets dev \
  --train_config conf/grvq16k.yaml \
  --min_seconds 0.5 --max_seconds 30 \
  --bitrates all \
  --baselines opus,codec2 \
  --token_format npy \
  "$@"
