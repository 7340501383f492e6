"""Quick score of a model on a probe set (the probe30 rows of egs/folder/results/spectral16k_cpu/probe30.tsv).

    python tools/probe_eval.py MODEL WAV_SCP

Each clip goes through `model(x)` offline in eval mode (the quantizer's nearest codes: the same audio as the .codes
path) continuous and at 1, 3 and 8 levels; prints one JSON line {rate: [mean PESQ-WB, mean output level dB]}
scored with `codec.eval.metrics`. WAV_SCP: `id path` lines (the probe set: 30 evenly spaced dev/speech clips,
normalised to -20 dBFS, at most 10 s).
"""

from __future__ import annotations

import json
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


if __name__ == "__main__":
    main(*sys.argv[1:3])
