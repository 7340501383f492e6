"""`codec demo`: code the bundled speech clip at a few level counts and report sizes and bitrates.

The clip (`codec/assets/speech_en.flac`) ships with the package, so the demo runs on a fresh install with no
audio of the user's own. The CLI only prints what `run_demo` returns.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from codec.coding.compress import decode_file, encode_file
from codec.errors import CodecError
from codec.models.codec import CodecModel

CLIP = Path(__file__).parents[1] / "assets" / "speech_en.flac"


@dataclass(frozen=True)
class DemoRow:
    """One level count of the demo: the .codes file written and the audio decoded from it."""

    levels: int
    bitrate: float  # payload bits per second at this level count
    codes: Path
    codes_bytes: int
    seconds: float  # length of the clip
    wav: Path
    wav_bytes: int

    @property
    def measured_kbps(self) -> float:
        """Bitrate with the container's overhead (header, packet framing, CRCs)."""
        return self.codes_bytes * 8 / self.seconds / 1000


@dataclass(frozen=True)
class DemoReport:
    clip: Path
    out_dir: Path
    rows: list[DemoRow]


def demo_levels(model: CodecModel, levels: int | None = None) -> list[int]:
    """The level counts the demo codes at: the one asked for, else the lowest, the middle and the highest."""
    return [levels] if levels else sorted({1, (model.num_levels + 1) // 2, model.num_levels})


def run_demo(
    model: CodecModel,
    out_dir: str | Path | None = None,
    *,
    levels: int | None = None,
    on_row: Callable[[DemoRow], None] | None = None,
) -> DemoReport:
    """Encode and decode the bundled clip at `demo_levels(model, levels)`, writing into `out_dir` (default: a
    new temporary folder). Returns what was written, one row per level count; `on_row` sees each row as soon
    as it is done."""
    out = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="codec-demo-"))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CodecError(f"cannot create --out-dir {out} ({e.strerror}); choose a folder you can write") from None
    rows = []
    for n in demo_levels(model, levels):
        codes, wav = out / f"{CLIP.stem}.{n}.codes", out / f"{CLIP.stem}.{n}.wav"
        header = encode_file(model, CLIP, codes, levels=n)
        decode_file(model, codes, wav)
        seconds = header.num_samples / header.sample_rate
        rows.append(DemoRow(n, header.bitrate, codes, codes.stat().st_size, seconds, wav, wav.stat().st_size))
        if on_row is not None:
            on_row(rows[-1])
    return DemoReport(CLIP, out, rows)
