"""Decode raw G.722 (ITU-T, 64 kbit/s, 16 kHz wideband; the `.g722` files of Asterisk's sound packages) to PCM.

Neither libsndfile nor SoX reads G.722, and Debian's ffmpeg pulls in about a hundred packages, so the decoder is
spandsp's (Debian package libspandsp2, a 280 kB download that needs only libc and libtiff6), called through
ctypes. Stage 0 of local/data.sh unpacks it next to the corpus with `dpkg -x`; an installed libspandsp works too.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
_lib = None


def load_spandsp(search_dir: str | os.PathLike | None = None) -> ctypes.CDLL:
    """Load libspandsp from `search_dir` (a `dpkg -x` tree of libspandsp2, searched below) or the system."""
    global _lib
    if _lib is not None:
        return _lib
    pattern = str(Path(search_dir) / "**" / "libspandsp.so*") if search_dir else None
    candidates = sorted(glob.glob(pattern, recursive=True)) if pattern else []
    system = ctypes.util.find_library("spandsp")
    if system:
        candidates.append(system)
    errors = []
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError as e:  # e.g. libtiff.so.6 missing
            errors.append(f"{path}: {e}")
            continue
        lib.g722_decode_init.restype = ctypes.c_void_p
        lib.g722_decode_init.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        lib.g722_decode.restype = ctypes.c_int
        lib.g722_decode.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        lib.g722_decode_free.argtypes = [ctypes.c_void_p]
        _lib = lib
        return lib
    raise OSError(
        "no usable libspandsp for G.722 decoding"
        + (f" ({'; '.join(errors)})" if errors else f" under {search_dir}" if search_dir else "")
        + ": run local/data.sh --stage 0 (it unpacks libspandsp2 with dpkg -x), or apt-get install libspandsp2"
        + " libtiff6"
    )


def decode_g722(data: bytes, search_dir: str | os.PathLike | None = None) -> np.ndarray:
    """G.722 bytes at 64 kbit/s (one byte per two 16 kHz samples) -> float32 samples in [-1, 1] at 16 kHz."""
    lib = load_spandsp(search_dir)
    if not data:
        raise ValueError("empty G.722 stream")
    state = lib.g722_decode_init(None, 64000, 0)
    if not state:
        raise RuntimeError("g722_decode_init failed")
    try:
        out = np.zeros(2 * len(data), dtype=np.int16)
        n = lib.g722_decode(state, out.ctypes.data, data, len(data))
    finally:
        lib.g722_decode_free(state)
    return out[:n].astype(np.float32) / 32768.0
