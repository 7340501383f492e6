"""Classical codecs scored like the model: Opus (Debian's opus-tools) and Codec2 (pycodec2).

Each baseline codes a mono float clip [T] at its own rate and returns the decoded clip at the same
rate and length, the number of bits its encoded form takes, and `how`: the exact procedure, which
the reports print. A missing tool is a `CodecError` naming the package that provides it.

Opus    opusenc --quiet --bitrate K --hard-cbr --speech|--music --padding 0 in.wav out.opus
        opusdec --quiet --rate R --float out.opus out.wav
        in.wav: the clip as 16-bit PCM WAV at its own rate (opusenc resamples to 48 kHz itself); R is the
        clip's rate when Opus decodes at it natively (8/12/16/24/48 kHz), else 48000, then soxr HQ to the
        clip's rate. --speech for speech clips, --music for music (the low-bitrate tuning, which otherwise
        is guessed per frame). Hard CBR so the rate is the one asked for; bits = the .opus file (Ogg pages
        and headers included; --padding 0 drops the 512 bytes opusenc reserves for tags).
Codec2  the clip resampled to 8 kHz (soxr HQ), 16-bit, zero-padded to whole frames, coded frame by frame with
        pycodec2.Codec2(mode) for mode 3200, 1600 or 700 (700C), decoded, resampled back with soxr HQ.
        bits = frames * bits_per_frame (bit-packed like .codes; c2enc would pad 700C frames to 32 bits).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from codec.audio import fit_length, resample
from codec.errors import CodecError

OPUS_KBPS = (6, 8, 12)
CODEC2_BPS = (700, 1600, 3200)
OPUS_NATIVE_RATES = (8000, 12000, 16000, 24000, 48000)
CODEC2_RATE = 8000


@dataclass
class Coded:
    audio: np.ndarray  # [T] float32, the input's rate and length
    num_bits: int  # size of the encoded form
    how: str  # exactly what was run
    codes: np.ndarray | None = None  # [frames, N] for neural codecs (codebook statistics)


class Opus:
    system = "opus"

    def __init__(self, kbps: float) -> None:
        self.kbps = float(kbps)

    @property
    def label(self) -> str:
        return f"opus {self.kbps:g} kbps"

    @staticmethod
    def check() -> None:
        missing = [tool for tool in ("opusenc", "opusdec") if shutil.which(tool) is None]
        if missing:
            raise CodecError(
                f"the opus baseline needs {' and '.join(missing)}, not found on PATH; "
                "install Debian's opus-tools (apt-get install opus-tools) or drop opus from --baselines"
            )

    @staticmethod
    def version() -> str:
        out = subprocess.run(["opusenc", "--version"], capture_output=True, text=True).stdout
        return out.splitlines()[0].strip() if out else "opusenc (unknown version)"

    def commands(self, sample_rate: int, content: str) -> tuple[list[str], list[str], int]:
        mode = "--music" if content == "music" else "--speech"
        rate = sample_rate if sample_rate in OPUS_NATIVE_RATES else 48000
        encode = ["opusenc", "--quiet", "--bitrate", f"{self.kbps:g}", "--hard-cbr", mode, "--padding", "0"]
        decode = ["opusdec", "--quiet", "--rate", str(rate), "--float"]
        return encode, decode, rate

    def describe(self, sample_rate: int = 16000, content: str = "speech") -> str:
        encode, decode, rate = self.commands(sample_rate, content)
        after = "" if rate == sample_rate else f"; soxr HQ {rate} -> {sample_rate} Hz"
        return f"{' '.join(encode)} in.wav out.opus; {' '.join(decode)} out.opus out.wav{after}"

    def run(self, audio: np.ndarray, sample_rate: int, content: str) -> Coded:
        encode, decode, rate = self.commands(sample_rate, content)
        with tempfile.TemporaryDirectory(prefix="codec-opus-") as tmp:
            src, coded, out = Path(tmp, "in.wav"), Path(tmp, "out.opus"), Path(tmp, "out.wav")
            sf.write(src, np.clip(audio, -1, 1), sample_rate, subtype="PCM_16")
            _run(encode + [str(src), str(coded)])
            _run(decode + [str(coded), str(out)])
            decoded, got_rate = sf.read(out, dtype="float32", always_2d=True)
            num_bits = coded.stat().st_size * 8
        decoded = resample(np.ascontiguousarray(decoded.T[:1]), got_rate, sample_rate)[0]
        return Coded(fit_length(decoded[None], audio.shape[-1])[0], num_bits, self.describe(sample_rate, content))


class Codec2:
    system = "codec2"

    def __init__(self, bps: int) -> None:
        if bps not in CODEC2_BPS:
            raise CodecError(f"codec2 mode {bps} is not one of {', '.join(map(str, CODEC2_BPS))}")
        self.bps = bps

    @property
    def kbps(self) -> float:
        return self.bps / 1000

    @property
    def label(self) -> str:
        return f"codec2 {self.kbps:g} kbps"

    @staticmethod
    def check() -> None:
        try:
            import pycodec2  # noqa: F401
        except ImportError as e:
            raise CodecError(
                f"the codec2 baseline needs pycodec2 ({e}); pip install pycodec2 (its wheel carries libcodec2) "
                "or drop codec2 from --baselines"
            ) from None

    @staticmethod
    def version() -> str:
        from importlib.metadata import version

        return f"pycodec2 {version('pycodec2')}"

    def describe(self, sample_rate: int = 16000, content: str = "speech") -> str:
        mode = "700C" if self.bps == 700 else str(self.bps)
        down = f"soxr HQ {sample_rate} -> {CODEC2_RATE} Hz; " if sample_rate != CODEC2_RATE else ""
        up = f"; soxr HQ {CODEC2_RATE} -> {sample_rate} Hz" if sample_rate != CODEC2_RATE else ""
        return f"{down}16-bit; pycodec2.Codec2({self.bps}) (mode {mode}) encode/decode frame by frame{up}"

    def run(self, audio: np.ndarray, sample_rate: int, content: str) -> Coded:
        import pycodec2

        codec = pycodec2.Codec2(self.bps)
        frame = codec.samples_per_frame()
        x = resample(audio[None].astype(np.float32), sample_rate, CODEC2_RATE)[0]
        pcm = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
        pcm = np.pad(pcm, (0, -pcm.size % frame))
        # pycodec2's encode/decode take exactly one frame per call (extra samples are silently ignored)
        decoded = [codec.decode(codec.encode(pcm[i : i + frame])) for i in range(0, pcm.size, frame)]
        y = np.concatenate(decoded).astype(np.float32) / 32768
        y = resample(y[None], CODEC2_RATE, sample_rate)
        num_bits = (pcm.size // frame) * codec.bits_per_frame()
        return Coded(fit_length(y, audio.shape[-1])[0], num_bits, self.describe(sample_rate, content))


BASELINES = {"opus": (Opus, OPUS_KBPS), "codec2": (Codec2, CODEC2_BPS)}


def make_baselines(names: str | list[str] | None, skip_missing: bool = False) -> tuple[list[Opus | Codec2], list[dict]]:
    """Baselines from names ('opus', 'codec2'; 'none' or empty for none), each at its standard rates, checked
    to be runnable here, and the ones that are not run.

    A baseline whose tool is missing is a `CodecError` naming the package to install; with `skip_missing` it is
    left out instead, and listed (one entry per rate: label, system, target_kbps, and why) in the second value."""
    if names is None or names in ("", "none"):
        return [], []
    wanted = [n.strip() for n in names.split(",") if n.strip()] if isinstance(names, str) else list(names)
    unknown = [n for n in wanted if n not in BASELINES]
    if unknown:
        raise CodecError(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)} or none")
    out: list[Opus | Codec2] = []
    not_run: list[dict] = []
    for name in dict.fromkeys(wanted):
        cls, rates = BASELINES[name]
        systems = [cls(rate) for rate in rates]
        try:
            cls.check()
        except CodecError as e:
            if not skip_missing:
                raise
            why = str(e)
            not_run += [{"label": s.label, "system": s.system, "target_kbps": s.kbps, "why": why} for s in systems]
            continue
        out.extend(systems)
    return out, not_run


def _run(command: list[str]) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise CodecError(f"{command[0]} not found; install Debian's opus-tools (apt-get install opus-tools)") from None
    if result.returncode != 0:
        reason = (result.stderr or result.stdout).strip().splitlines()
        raise CodecError(f"{command[0]} failed (exit {result.returncode}): {reason[-1] if reason else 'no message'}")
