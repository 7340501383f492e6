#!/usr/bin/env bash
# The mini recipe: stages 1-7 on CPU in a few minutes, on clips it generates (no network). CI runs it:
#   cd egs/mini && ./run.sh
# A 0.1 M-parameter 16 kHz model trains 40 steps; the 9 test clips are decoded and scored, without DNSMOS.
# Stage 7 calls `codec tokens`.
set -euo pipefail

./codec.sh \
  --stage 1 \
  --nj 2 \
  --corpus_dir downloads/mini \
  --train_set train --valid_set dev --test_sets test \
  --train_config conf/mini.yaml \
  --min_seconds 0.5 --max_seconds 10 \
  --bitrates 1.2,4.8 \
  --baselines opus,codec2 \
  --eval_args "--metrics pesq_wb,stoi,si_sdr,mel_distance --listen-clips 2 --listen-seconds 2" \
  --token_sets "train test" \
  --token_format npy \
  --results_note "A CI smoke run on generated clips: a 0.1 M-parameter model trained for 40 steps on CPU. The numbers only show that every stage runs; they say nothing about codec quality." \
  "$@"
