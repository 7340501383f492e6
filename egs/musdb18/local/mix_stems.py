#!/usr/bin/env python3
"""Sum a MUSDB18-HQ track's four stems (drums, bass, other, vocals) into one mixture wav.

local/mix_stems.py "downloads/musdb18hq/train/Artist - Title" data/local/mixtures/music_Artist___Title.wav
"""

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

STEMS = ("drums", "bass", "other", "vocals")


def main() -> int:
    track, out = Path(sys.argv[1]), Path(sys.argv[2])
    missing = [s for s in STEMS if not (track / f"{s}.wav").is_file()]
    if missing:
        print(
            f"mix_stems: {track} has neither mixture.wav nor {', '.join(s + '.wav' for s in missing)}", file=sys.stderr
        )
        return 1
    mix, rate = None, None
    for stem in STEMS:
        audio, r = sf.read(str(track / f"{stem}.wav"), dtype="float32", always_2d=True)
        if rate is not None and r != rate:
            print(f"mix_stems: {track}: {stem}.wav is at {r} Hz, the others at {rate} Hz", file=sys.stderr)
            return 1
        rate = r
        if mix is None:
            mix = audio
        else:
            n = max(len(mix), len(audio))
            mix = np.pad(mix, ((0, n - len(mix)), (0, 0))) + np.pad(audio, ((0, n - len(audio)), (0, 0)))
    peak = float(np.abs(mix).max())
    if peak > 1.0:  # the stems of a mastered track can add past full scale; never clip
        mix = mix / peak
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(out), mix, rate, subtype="PCM_16")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
