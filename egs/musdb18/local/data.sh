#!/usr/bin/env bash
# MUSDB18-HQ (SigSep, for research/non-commercial use, see its page): 150 full-length music tracks (~10 h), stereo
# 44.1 kHz, each with its mixture and four stems. Source: https://zenodo.org/records/3338373 (musdb18hq.zip, 22.7 GB);
# lhotse has no downloader for it, so stage 0 uses wget. (The compressed MUSDB18, .stem.mp4 files, is not read:
# take the HQ release, or convert it to wav folders with musdb's `musdbconvert`.)
#
# Layout under --corpus_dir (the unpacked zip):
#   train/<Artist - Title>/{mixture,drums,bass,other,vocals}.wav     100 tracks
#   test/<Artist - Title>/{mixture,drums,bass,other,vocals}.wav      50 tracks
# A copy already on disk: ./run.sh --stage 1 --corpus_dir /data/musdb18hq
#
# Music for the codec is the mix of the stems: mixture.wav, which is their sum; a track without mixture.wav has
# its stems summed into data/local/mixtures/<id>.wav. dev = musdb's 14 official validation tracks (from train/),
# test = test/. Utterance id = "music_" + the track name with every character outside [A-Za-z0-9] as "_"
# ("music" also tells `codec eval` the content type); utt2spk maps a track to its artist.
set -euo pipefail

# begin options
stage=0                            # 0: download, 1: write the data dirs
stop_stage=1                       # last stage
corpus_dir=downloads/musdb18hq     # the unpacked corpus (holds train/ and test/)
data_dir=data                      # where the data dirs go
url=https://zenodo.org/records/3338373/files/musdb18hq.zip  # the MUSDB18-HQ archive
python=python                      # Python with numpy and soundfile (mixing stems)
# end options
. utils/parse_options.sh

# musdb's validation tracks (musdb/configs/mus.yaml)
valid_tracks="Actions - One Minute Smile
Clara Berry And Wooldog - Waltz For My Victims
Johnny Lokke - Promises & Lies
Patrick Talbot - A Reason To Leave
Triviul - Angelsaint
Alexander Ross - Goodbye Bolero
Fergessen - Nos Palpitants
Leaf - Summerghost
Skelpolu - Human Mistakes
Young Griffo - Pennies
ANiMAL - Rockshow
James May - On The Line
Meaxic - Take A Step
Traffic Experiment - Sirens"

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  if [ ! -d "$corpus_dir/train" ] || [ ! -d "$corpus_dir/test" ]; then
    mkdir -p "$corpus_dir"
    wget -c -O "$corpus_dir/musdb18hq.zip" "$url"
    unzip -q -o "$corpus_dir/musdb18hq.zip" -d "$corpus_dir"
    rm "$corpus_dir/musdb18hq.zip"
  fi
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  root=$(readlink -f "$corpus_dir")
  mixes=$(readlink -f "$data_dir")/local/mixtures
  tmp=$data_dir/local/musdb18
  mkdir -p "$tmp" "$mixes"
  if compgen -G "$root/*/*.stem.mp4" > /dev/null; then
    echo "local/data.sh: $root holds MUSDB18 .stem.mp4 files; use MUSDB18-HQ (wav folders) or convert with musdbconvert" >&2; exit 1
  fi
  echo "$valid_tracks" > "$tmp/valid_tracks"
  for part in train test; do
    [ -d "$root/$part" ] || { echo "local/data.sh: $root/$part not found; run stage 0 or pass --corpus_dir" >&2; exit 1; }
    : > "$tmp/$part.list"
    for track in "$root/$part"/*/; do
      track=${track%/}
      name=$(basename "$track")
      id=music_$(echo "$name" | sed 's/[^A-Za-z0-9]/_/g')
      if [ -f "$track/mixture.wav" ]; then
        audio=$track/mixture.wav
      else
        audio=$mixes/$id.wav
        [ -f "$audio" ] || "$python" local/mix_stems.py "$track" "$audio"
      fi
      printf '%s\t%s\t%s\n' "$id" "$name" "$audio" >> "$tmp/$part.list"
    done
  done
  for set in train dev test; do
    dir=$data_dir/$set
    mkdir -p "$dir"
    case $set in
      train) awk -F'\t' 'NR == FNR { v[$0] = 1; next } !($2 in v) { print $1, $3 }' "$tmp/valid_tracks" "$tmp/train.list" > "$dir/wav.scp" ;;
      dev) awk -F'\t' 'NR == FNR { v[$0] = 1; next } ($2 in v) { print $1, $3 }' "$tmp/valid_tracks" "$tmp/train.list" > "$dir/wav.scp" ;;
      test) awk -F'\t' '{ print $1, $3 }' "$tmp/test.list" > "$dir/wav.scp" ;;
    esac
    # the artist: the track name up to " - "
    cat "$tmp/train.list" "$tmp/test.list" | awk -F'\t' '{a = $2; sub(/ - .*/, "", a); gsub(/[^A-Za-z0-9]/, "_", a); print $1, a}' \
      | awk 'NR == FNR { want[$1] = 1; next } ($1 in want)' "$dir/wav.scp" - > "$dir/utt2spk"
    utils/fix_data_dir.py "$dir"
  done
fi
