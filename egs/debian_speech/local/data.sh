#!/usr/bin/env bash
# Real speech from Debian packages: the Asterisk PBX core prompt sets in their 16 kHz G.722 form, one professional
# voice per language (US English, Mexican Spanish, Canadian French, Italian, Russian; CC-BY-SA-3.0 / CC-BY-3.0,
# see egs/debian_speech/README.md). Stage 0 fetches them with `apt-get download` (needs Debian's archive and
# `apt-get update` done; about 56 MB in all), unpacks them with `dpkg -x` (never installs), and converts every
# recording to 16 kHz mono 16-bit FLAC (local/convert_packages.py; G.722 is decoded by spandsp, Debian package
# libspandsp2, fetched the same way and called through ctypes: local/g722.py). Stage 1 writes the data dirs from
# the corpus' manifest.tsv, holding out dev by a hash of the prompt name (local/prepare_data.py).
# Left out on purpose: the 8 kHz-only telephony sets (gsm, ulaw, the 8 kHz .wav sets: asterisk-prompt-es-co,
# -fr-armelle, -it-menardi), and gcompris-qt-data, whose Debian package ships no voice recordings.
#
# Layout under --corpus_dir (nothing of it goes into the repo):
#   debs/<package>_<version>_all.deb      the downloads (kept, so a rerun downloads nothing)
#   src/<package>/usr/share/...           dpkg -x trees (src/libspandsp2 is the G.722 decoder)
#   audio/<speaker>/<prompt>.flac         e.g. audio/en_US_f_Allison/digits/1.flac (16 kHz mono FLAC)
#   manifest.tsv                          utt, speaker, prompt, package, seconds, path (relative)
#   SOURCES.tsv, LICENSES.md, licenses/<package>.copyright    per package: version, minutes, licence
# Utterance id = <speaker>-<prompt> with '/' as '-' (en_US_f_Allison-digits-1); speaker (utt2spk) = the voice.
#
# An existing copy (a corpus_dir with manifest.tsv and audio/): skip the download with --stage 1, e.g.
#   ./run.sh --corpus_dir /work/data/debian_speech --data_dir /work/data/debian_speech/data --stage 1
set -euo pipefail

# begin options
stage=0              # 0: download, unpack and convert to FLAC; 1: write the data dirs
stop_stage=1         # last stage
corpus_dir=          # where the packages are fetched and the FLAC corpus is built (required)
data_dir=data        # where the data dirs (train, dev) go
packages="asterisk-core-sounds-en-g722 asterisk-core-sounds-es-g722 asterisk-core-sounds-fr-g722 asterisk-core-sounds-it-g722 asterisk-core-sounds-ru-g722"  # Debian packages of speech recordings
decoder_package=libspandsp2  # Debian package whose libspandsp decodes G.722
dev_percent=5        # share of the prompt names held out for dev
min_seconds=0.5      # drop shorter recordings
python=python        # Python with soundfile and soxr
# end options
. utils/parse_options.sh

if [ -z "$corpus_dir" ]; then
  echo "local/data.sh: pass --corpus_dir DIR (where the corpus is built, or an existing copy of it)" >&2
  exit 1
fi

if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then
  mkdir -p "$corpus_dir/debs" "$corpus_dir/src"
  for pkg in $packages $decoder_package; do
    if ! ls "$corpus_dir/debs/${pkg}_"*.deb >/dev/null 2>&1; then
      echo "local/data.sh: apt-get download $pkg"
      (cd "$corpus_dir/debs" && apt-get download "$pkg") || {
        echo "local/data.sh: apt-get download $pkg failed; run 'apt-get update' (as root) and check the name" >&2
        exit 1
      }
    fi
    if [ ! -d "$corpus_dir/src/$pkg" ]; then
      dpkg -x "$(ls "$corpus_dir/debs/${pkg}_"*.deb | tail -n 1)" "$corpus_dir/src/$pkg.tmp"
      mv "$corpus_dir/src/$pkg.tmp" "$corpus_dir/src/$pkg"
    fi
  done
  # shellcheck disable=SC2086  # one word per package
  "$python" local/convert_packages.py "$corpus_dir/src" "$corpus_dir" $packages \
    --spandsp-dir "$corpus_dir/src/$decoder_package" --min-seconds "$min_seconds"
fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  "$python" local/prepare_data.py "$corpus_dir" "$data_dir" --dev-percent "$dev_percent"
  for set in train dev; do utils/fix_data_dir.py "$data_dir/$set"; done
fi
