#!/usr/bin/env python3
"""Write the mini corpus: short generated clips, so the recipe needs no network and no download.

    <out>/speech/<spk>/<spk>_<nnn>.wav    speech-like: a gliding harmonic voice through moving formants
    <out>/music/<inst>/<inst>_<nnn>.wav   music-like: plucked notes of a random melody over a chord

16 kHz mono 16-bit WAV, 1 to 2.5 s each; a seeded generator, so every run writes the same files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 16000


def speech_like(rng: np.random.Generator, seconds: float, f0: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    pitch = f0 * (1 + 0.12 * np.sin(2 * np.pi * rng.uniform(1, 4) * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    formants = [rng.uniform(300, 900), rng.uniform(900, 2500)]
    x = np.zeros_like(t)
    for k in range(1, 40):
        freq = k * pitch
        gain = sum(np.exp(-(((freq - f) / 150.0) ** 2)) for f in formants) + 0.05 / k
        x += gain * np.sin(k * phase) * (freq < RATE / 2)
    syllables = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2.5, 5) * t) ** 2  # syllable-rate envelope
    x = x * syllables + 0.02 * rng.standard_normal(t.size)
    return x


def music_like(rng: np.random.Generator, seconds: float, brightness: float) -> np.ndarray:
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    root = rng.choice([110.0, 130.8, 146.8, 164.8])
    x = sum(0.2 * np.sin(2 * np.pi * root * r * t) for r in (1, 1.26, 1.5))  # a sustained chord
    note = int(RATE * rng.uniform(0.15, 0.3))
    for start in range(0, n, note):
        f = root * 2 ** (rng.integers(0, 24) / 12) * 2
        m = min(note, n - start)
        tt = np.arange(m) / RATE
        x[start : start + m] += sum(np.sin(2 * np.pi * f * h * tt) * brightness**h for h in range(1, 6)) * np.exp(
            -6 * tt
        )
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="corpus folder to write")
    parser.add_argument("--speakers", type=int, default=6)
    parser.add_argument("--clips", type=int, default=5, help="clips per speaker and per instrument")
    args = parser.parse_args()
    rng = np.random.default_rng(20240601)
    out = Path(args.out)
    jobs = [("speech", f"spk{i + 1}", i) for i in range(args.speakers)]
    jobs += [("music", f"inst{i + 1}", i) for i in range(max(2, args.speakers // 2))]
    for kind, name, i in jobs:
        folder = out / kind / name
        folder.mkdir(parents=True, exist_ok=True)
        for j in range(args.clips):
            seconds = rng.uniform(1.0, 2.5)
            if kind == "speech":
                x = speech_like(rng, seconds, f0=100 + 25 * i)
            else:
                x = music_like(rng, seconds, brightness=0.3 + 0.1 * i)
            x = 0.5 * x / np.abs(x).max()
            sf.write(folder / f"{name}_{j + 1:03d}.wav", x.astype(np.float32), RATE, subtype="PCM_16")
    print(f"{out}: {len(jobs) * args.clips} clips")


if __name__ == "__main__":
    main()
