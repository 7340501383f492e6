"""Kaldi data dirs, wav.scp lists, list files and folders of audio: the one reader of utterances and their audio.

Training, token extraction, evaluation, batch coding and the recipe tools all read their data through here.

A data dir holds `wav.scp` (`recording-id path`), optionally `segments` (`utt-id recording-id start end`,
times in seconds, end -1 = to the end of the recording) and `utt2dur` (`utt-id seconds`); without
`segments` every recording is one utterance with the recording's id. Blank lines are skipped; ids are
unique. A malformed table is a one-line `DataDirError` naming the file and the line (`path:line: ...`).

A relative path in wav.scp is relative to the current folder (the recipe dir, as in Kaldi); one that does
not exist there but does beside the wav.scp is taken from there.

Pipes: a wav.scp entry ending in `|` is a command whose stdout is the audio (Kaldi's convention, e.g.
`utt1 sox in.sph -t wav - |`). The command is split like a shell would split its words (quotes work) and
run directly, without a shell: nothing in a data dir is expanded, globbed or chained. Shell syntax (`|`,
`;`, `&`, `<`, `>`, `(`, `)`, `$`, a backquote) inside the command is therefore an error that says so; a
command that really needs a shell asks for one explicitly: `utt1 sh -c 'flac -dc a.flac | sox ...' |`.
A pipe's output is read whole into memory, and it runs again every time its audio is read.
"""

from __future__ import annotations

import io
import math
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from codec.atomic import is_partial_output
from codec.errors import CodecError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".opus")
SHELL_OPERATORS = set("|;&<>()")


class DataDirError(CodecError):
    """A malformed data dir or audio list; the message names the file (and line) and the fix."""


class AudioError(CodecError):
    """An utterance whose audio cannot be used; `kind` is 'unreadable' or 'empty'."""

    def __init__(self, message: str, kind: str = "unreadable") -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Utterance:
    id: str
    path: str  # a file path, or a command ending in "|" (see the module docstring)
    start: float = 0.0  # seconds into the recording (segments)
    end: float | None = None  # seconds; None = to the end of the recording
    duration: float | None = None  # seconds, if known without reading (utt2dur, or a segment's times)

    @property
    def is_pipe(self) -> bool:
        return self.path.rstrip().endswith("|")


# --- tables -------------------------------------------------------------------------------------------------
def read_table(path: str | Path, fields: int | None = None, *, unique: bool = False) -> list[tuple[str, str]]:
    """(id, rest of line) pairs in file order. `fields`: the number of whitespace-separated fields that must
    follow the id (None: any, but not nothing, except in `text`). `unique`: a repeated id is an error."""
    return [(key, rest) for _, key, rest in _numbered_rows(Path(path), fields, unique)]


def _numbered_rows(path: Path, fields: int | None, unique: bool) -> list[tuple[int, str, str]]:
    rows, seen = [], set()
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        rest = parts[1].strip() if len(parts) > 1 else ""
        if fields is not None and len(rest.split()) != fields and not (fields == 1 and rest):
            raise DataDirError(f"{path}:{number}: expected an id and {fields} field(s), got {line.strip()!r}")
        if fields is None and path.name != "text" and not rest:
            raise DataDirError(f"{path}:{number}: id {parts[0]} has nothing after it")
        if unique and parts[0] in seen:
            raise DataDirError(f"{path}:{number}: id {parts[0]} appears twice; ids must be unique")
        seen.add(parts[0])
        rows.append((number, parts[0], rest))
    return rows


def _first_of_each(rows: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    out: dict[str, tuple[int, str, str]] = {}
    for row in rows:
        out.setdefault(row[1], row)
    return list(out.values())


def _seconds(text: str, path: Path, number: int) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataDirError(f"{path}:{number}: {text!r} is not a number of seconds")
    return value


def resolve_path(where: str, scp: Path) -> str:
    """A wav.scp entry as it is read: relative to the current folder, else to the scp's folder if it is there."""
    if where.endswith("|"):
        return where
    p = Path(where)
    if not p.is_absolute() and not p.exists() and (scp.parent / p).exists():
        return str(scp.parent / p)
    return where


def read_wav_scp(path: str | Path, *, unique: bool = True) -> dict[str, str]:
    """Recording id -> path (resolved, see `resolve_path`) or pipe command, in file order."""
    path = Path(path)
    return {key: resolve_path(where, path) for _, key, where in _first_of_each(_numbered_rows(path, None, unique))}


def read_data_dir(directory: str | Path, *, unique: bool = True) -> list[Utterance]:
    """The utterances of a Kaldi data dir, in file order (of `segments` if present, else of `wav.scp`).

    `unique=False` (for tools that report problems rather than stop at the first) keeps the first line of a
    repeated id instead of refusing the dir."""
    directory = Path(directory)
    if not (directory / "wav.scp").is_file():
        raise DataDirError(f"{directory} has no wav.scp; it is not a Kaldi data dir (one `id path` line per recording)")
    wavs = read_wav_scp(directory / "wav.scp", unique=unique)
    durations = {}
    if (directory / "utt2dur").is_file():
        for number, key, value in _first_of_each(_numbered_rows(directory / "utt2dur", 1, unique)):
            durations[key] = _seconds(value, directory / "utt2dur", number)
    if not (directory / "segments").is_file():
        return [Utterance(key, where, duration=durations.get(key)) for key, where in wavs.items()]
    utts = []
    segments = directory / "segments"
    for number, key, rest in _first_of_each(_numbered_rows(segments, 3, unique)):
        rec, start, end = rest.split()
        if rec not in wavs:
            raise DataDirError(f"{segments}:{number}: {key} names recording {rec}, which is not in wav.scp")
        start, end = _seconds(start, segments, number), _seconds(end, segments, number)
        stop = None if end < 0 else end
        known = durations.get(key, None if stop is None else max(stop - start, 0.0))
        utts.append(Utterance(key, wavs[rec], start=start, end=stop, duration=known))
    return utts


def read_folder(folder: str | Path, suffixes: tuple[str, ...] = AUDIO_SUFFIXES) -> list[Utterance]:
    """Files under `folder` with one of `suffixes` (audio by default), recursively; the id is the path relative
    to it, without its suffix, whitespace replaced by `_` (two files making one id is an error). The temporary
    files of an interrupted writer (`codec.atomic`) are not inputs."""
    folder = Path(folder)
    files = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file() and not is_partial_output(p)
    )
    seen: dict[str, Path] = {}
    for p in files:
        key = "_".join(p.relative_to(folder).with_suffix("").as_posix().split())
        if key in seen:
            raise DataDirError(f"{seen[key]} and {p} both make utterance id {key}; rename one or list them in wav.scp")
        seen[key] = p
    return [Utterance(key, str(p)) for key, p in seen.items()]


def read_list(path: str | Path) -> list[Utterance]:
    """The files of a list file, one path per line, in file order; the id is a file's name without its suffix,
    whitespace replaced by `_`. Blank lines are skipped; a relative path is found as in wav.scp
    (`resolve_path`). Two lines making one id is an error: a wav.scp names such files apart."""
    path = Path(path)
    utts: list[Utterance] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        where = line.strip()
        if not where:
            continue
        key = "_".join(Path(where).stem.split())
        if not key:
            raise DataDirError(f"{path}:{number}: {where!r} names no file")
        if key in seen:
            raise DataDirError(
                f"{path}:{number}: {where} makes id {key}, as line {seen[key]} does; "
                "list files with different names, or give each an id in a wav.scp"
            )
        seen[key] = number
        utts.append(Utterance(key, resolve_path(where, path)))
    return utts


def list_utterances(data: str | Path) -> list[Utterance]:
    """The utterances of a Kaldi data dir, a wav.scp or a folder of audio files, sorted by id."""
    data = Path(data)
    if data.is_dir() and (data / "wav.scp").is_file():
        utts = read_data_dir(data)
    elif data.is_dir():
        utts = read_folder(data)
    elif data.is_file():
        if data.suffix.lower() in AUDIO_SUFFIXES:
            raise DataDirError(f"--data {data} is an audio file; pass a folder of audio files, a wav.scp or a data dir")
        utts = [Utterance(key, where) for key, where in read_wav_scp(data).items()]
    else:
        raise DataDirError(f"--data {data} not found; pass a Kaldi data dir, a wav.scp or a folder of audio files")
    if not utts:
        raise DataDirError(
            f"no utterances in {data}: expected wav.scp lines or audio files ({', '.join(AUDIO_SUFFIXES)})"
        )
    return sorted(utts, key=lambda u: u.id)


# --- audio ----------------------------------------------------------------------------------------------------
def pipe_argv(command: str) -> list[str]:
    """The argument list of a wav.scp pipe entry (`cmd args |`), run without a shell (see the module docstring)."""
    text = command.rstrip()
    text = text[:-1] if text.endswith("|") else text
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars="".join(sorted(SHELL_OPERATORS)))
        lexer.whitespace_split = True
        argv = list(lexer)
    except ValueError as e:
        raise AudioError(f"cannot split the command {text.strip()!r}: {e}") from None
    syntax = [a for a in argv if set(a) <= SHELL_OPERATORS] + [a for a in argv if "$" in a or "`" in a]
    if syntax:
        raise AudioError(
            f"the command {text.strip()!r} uses shell syntax ({syntax[0]}), and wav.scp commands run without a shell; "
            "write it as sh -c '...' | to run it in one"
        )
    if not argv:
        raise AudioError("empty command before '|'")
    return argv


def run_pipe(command: str) -> bytes:
    """The stdout of a wav.scp pipe entry; an `AudioError` naming the command's last stderr line if it fails."""
    argv = pipe_argv(command)
    try:
        run = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, check=False)
    except OSError as e:
        raise AudioError(f"cannot run {argv[0]}: {e.strerror or e}") from None
    if run.returncode != 0:
        err = run.stderr.decode(errors="replace").strip().splitlines()
        raise AudioError(f"command exited with {run.returncode}: {err[-1] if err else 'no message'}")
    return run.stdout


def open_audio(utt: Utterance) -> sf.SoundFile:
    """The utterance's recording (a file, or a pipe's output) opened with soundfile; `AudioError` if it cannot be."""
    if utt.is_pipe:
        source = io.BytesIO(run_pipe(utt.path))
    elif not Path(utt.path).is_file():
        raise AudioError(f"{utt.path} not found")
    else:
        source = utt.path
    try:
        return sf.SoundFile(source)
    except Exception as e:  # libsndfile raises several types for a damaged or unknown file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        where = "the command's output" if utt.is_pipe else utt.path
        raise AudioError(f"cannot read {where} as audio ({reason})") from None


def read_span(utt: Utterance, offset: float = 0.0, seconds: float | None = None) -> tuple[np.ndarray, int]:
    """float32 [C, n] and the file's sample rate: up to `seconds` (None: all) of the utterance, from `offset`
    seconds into it. `AudioError` if unreadable, or (kind 'empty') if there are no samples in that range."""
    with open_audio(utt) as f:
        rate, total = f.samplerate, f.frames
        begin = min(int(round((utt.start + offset) * rate)), total)
        end = total if utt.end is None else min(total, int(round(utt.end * rate)))
        count = max(end - begin if seconds is None else min(end - begin, math.ceil(seconds * rate)), 0)
        f.seek(begin)
        try:
            data = f.read(count, dtype="float32", always_2d=True)
        except Exception as e:  # a truncated or damaged file fails part-way
            raise AudioError(f"cannot read {utt.path} as audio ({str(e).splitlines()[0] if str(e) else e})") from None
    if data.shape[0] == 0:
        raise AudioError("no audio samples", kind="empty")
    if not np.isfinite(data).all():
        raise AudioError("contains NaN or infinite samples")
    return np.ascontiguousarray(data.T), int(rate)


def utterance_seconds(utt: Utterance) -> float:
    """Length of the utterance from its audio's header (a pipe runs its command); `AudioError` if unreadable."""
    with open_audio(utt) as f:
        duration = f.frames / f.samplerate
    end = duration if utt.end is None else min(utt.end, duration)
    return max(end - utt.start, 0.0)
