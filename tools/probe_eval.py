"""Quick score of a model on a probe set (the probe30 rows of egs/folder/results/spectral16k_cpu/probe30.tsv).

    python tools/probe_eval.py MODEL WAV_SCP
    python tools/probe_eval.py --build DEV_SPEECH_DIR OUT_DIR     # writes OUT_DIR/wav.scp and OUT_DIR/wav/*.wav

Each clip goes through `model(x)` offline in eval mode (the quantizer's nearest codes: the same audio as the .codes
path) continuous and at 1, 3 and 8 levels; prints one JSON line {rate: [mean PESQ-WB, mean output level dB]}
scored with `codec.eval.metrics`. WAV_SCP: `id path` lines (the probe set: 30 evenly spaced dev/speech clips,
normalised to -20 dBFS, at most 10 s).

`--build` makes that set from `../shared/data/dev/speech`: its audio files (paths holding spaces left out, as the
recipes' data dirs leave them out) sorted by path, the 30 at `round(linspace(0, n - 1, 30))`, each mixed to mono,
resampled to 16 kHz (soxr), cut to its first 10 s and scaled to -20 dBFS RMS, written as float WAV.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import soundfile as sf
import torch

from codec.checkpoint import load_model
from codec.eval.metrics import level_db, pesq_wb


def main(model_path: str, scp: str) -> None:
    torch.set_num_threads(1)
    model = load_model(model_path)
    settings = [("cont", {"quantize": False}), ("1", {"levels": 1}), ("3", {"levels": 3}), ("8", {"levels": 8})]
    rows: dict[str, list[tuple[float, float]]] = {}
    with open(scp) as f:
        for line in f:
            _, path = line.split(maxsplit=1)
            x, sr = sf.read(path.strip(), dtype="float32")
            xt = torch.from_numpy(x)[None, None]
            for name, kw in settings:
                with torch.no_grad():
                    y = model(xt, **kw)[0][0, 0].numpy()
                rows.setdefault(name, []).append((pesq_wb(x, y, sr)["pesq_wb"], level_db(x, y)["level_db"]))
    out = {k: [round(float(np.mean([r[0] for r in v])), 3), round(float(np.mean([r[1] for r in v])), 2)]
           for k, v in rows.items()}  # fmt: skip
    print(json.dumps(out))


def build(dev_speech: str, out_dir: str, clips: int = 30, rate: int = 16000, seconds: float = 10.0) -> None:
    from codec.audio import read_audio, resample

    paths = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(dev_speech)
        for name in names
        if name.lower().endswith((".wav", ".flac", ".ogg")) and " " not in os.path.join(root, name)
    )
    if not paths:
        sys.exit(f"probe_eval.py: no audio files under {dev_speech}")
    os.makedirs(os.path.join(out_dir, "wav"), exist_ok=True)
    with open(os.path.join(out_dir, "wav.scp"), "w") as scp:
        for i in np.round(np.linspace(0, len(paths) - 1, clips)).astype(int):
            x, sr = read_audio(paths[i])  # [C, T]
            x = resample(x.mean(0, keepdims=True), sr, rate)[0, : int(seconds * rate)]
            x = x * (10 ** (-20 / 20) / max(float(np.sqrt(np.mean(x**2))), 1e-9))
            out = os.path.join(out_dir, "wav", f"p{i:04d}.wav")
            sf.write(out, x.astype(np.float32), rate, subtype="FLOAT")
            scp.write(f"p{i:04d} {os.path.abspath(out)}\n")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--build"]:
        build(*sys.argv[2:4])
    else:
        main(*sys.argv[1:3])
