"""The one data-dir reader: tables, segments, folders, pipes, and one-line errors naming file and line."""

from __future__ import annotations

import shlex

import numpy as np
import pytest
import soundfile as sf

from codec.datadir import (
    AudioError,
    DataDirError,
    Utterance,
    list_utterances,
    pipe_argv,
    read_data_dir,
    read_span,
    utterance_seconds,
)

RATE = 8000


@pytest.fixture
def rec(tmp_path):
    """A 2 s recording whose sample n holds n / 32000 (so a read span shows where it starts)."""
    path = tmp_path / "rec.wav"
    sf.write(path, (np.arange(2 * RATE) / 32000).astype(np.float32), RATE, subtype="FLOAT")
    return path


def test_data_dir_with_segments_and_utt2dur(tmp_path, rec):
    (tmp_path / "wav.scp").write_text(f"r1 {rec}\n\n")
    (tmp_path / "segments").write_text("u2 r1 1.0 -1\nu1 r1 0.25 0.5\n")
    (tmp_path / "utt2dur").write_text("u1 0.25\n")
    u2, u1 = read_data_dir(tmp_path)  # file order
    assert u1 == Utterance("u1", str(rec), 0.25, 0.5, 0.25)
    assert (u2.id, u2.start, u2.end, u2.duration) == ("u2", 1.0, None, None)
    assert [u.id for u in list_utterances(tmp_path)] == ["u1", "u2"]  # sorted by id
    audio, rate = read_span(u1)
    assert rate == RATE and audio.shape == (1, 2000) and audio[0, 0] == pytest.approx(2000 / 32000)
    assert read_span(u2, offset=0.5, seconds=0.1)[0].shape == (1, 800)
    assert utterance_seconds(u2) == pytest.approx(1.0) and utterance_seconds(u1) == pytest.approx(0.25)


def test_wav_scp_paths_relative_to_its_folder_and_folders_of_files(tmp_path, rec, monkeypatch):
    monkeypatch.chdir(tmp_path.parent)
    (tmp_path / "wav.scp").write_text("a rec.wav\n")
    assert list_utterances(tmp_path / "wav.scp")[0].path == str(tmp_path / "rec.wav")
    (tmp_path / "wav.scp").unlink()
    (tmp_path / "sub dir").mkdir()
    sf.write(tmp_path / "sub dir" / "x.flac", np.zeros(100, np.float32), RATE)
    assert [u.id for u in list_utterances(tmp_path)] == ["rec", "sub_dir/x"]
    sf.write(tmp_path / "sub dir" / "x.wav", np.zeros(100, np.float32), RATE)
    with pytest.raises(DataDirError, match="both make utterance id sub_dir/x"):
        list_utterances(tmp_path)


@pytest.mark.parametrize(
    "files, message",
    [
        ({"wav.scp": "r1\n"}, r"wav.scp:1: id r1 has nothing after it"),
        ({"wav.scp": "r1 a.wav\n\nr1 b.wav\n"}, r"wav.scp:3: id r1 appears twice"),
        ({"wav.scp": "r1 a.wav\n", "segments": "u1 r1 0.0\n"}, r"segments:1: expected an id and 3 field"),
        ({"wav.scp": "r1 a.wav\n", "segments": "u1 r2 0 1\n"}, r"segments:1: u1 names recording r2, which is not in"),
        ({"wav.scp": "r1 a.wav\n", "segments": "u1 r1 zero 1\n"}, r"segments:1: 'zero' is not a number of seconds"),
        ({"wav.scp": "r1 a.wav\n", "utt2dur": "r0 1\nr1 1.0 2.0\n"}, r"utt2dur:2: '1.0 2.0' is not a number"),
        ({"wav.scp": "r1 a.wav\n", "utt2dur": "r1 nan\n"}, r"utt2dur:1: 'nan' is not a number"),
        ({"utt2dur": "r1 1.0\n"}, r"has no wav.scp; it is not a Kaldi data dir"),
    ],
)
def test_malformed_data_dirs_are_one_line_errors_naming_the_file(tmp_path, files, message):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(DataDirError, match=message) as e:
        read_data_dir(tmp_path)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)


def test_missing_and_unreadable_audio(tmp_path):
    (tmp_path / "text.wav").write_text("not audio")
    with pytest.raises(AudioError, match="nope.wav not found"):
        read_span(Utterance("a", str(tmp_path / "nope.wav")))
    with pytest.raises(AudioError, match="cannot read .*text.wav as audio"):
        utterance_seconds(Utterance("a", str(tmp_path / "text.wav")))


def test_a_span_without_samples_is_empty(rec):
    with pytest.raises(AudioError, match="no audio samples") as e:
        read_span(Utterance("a", str(rec), start=5.0))
    assert e.value.kind == "empty"


def test_pipes_run_without_a_shell(tmp_path, rec):
    piped = Utterance("p", f"cat {shlex.quote(str(rec))} |", start=0.25, end=0.5)
    assert piped.is_pipe
    assert np.array_equal(read_span(piped)[0], read_span(Utterance("f", str(rec), 0.25, 0.5))[0])
    assert utterance_seconds(piped) == pytest.approx(0.25)
    assert pipe_argv("sox 'my file.wav' -t wav - |") == ["sox", "my file.wav", "-t", "wav", "-"]
    # Nothing is expanded or chained: shell syntax is refused, naming the way to ask for a shell.
    marker = tmp_path / "ran"
    for command in (f"cat {rec} | tee {marker} |", f"cat {rec}; touch {marker} |", "cat $HOME/x.wav |", "cat `ls` |"):
        with pytest.raises(AudioError, match="uses shell syntax .*sh -c"):
            read_span(Utterance("p", command))
    assert not marker.exists()
    explicit = Utterance("p", f"sh -c 'cat {rec} | cat' |")
    assert read_span(explicit)[0].shape == (1, 2 * RATE)
    with pytest.raises(AudioError, match="command exited with 3: boom"):
        read_span(Utterance("p", "sh -c 'echo boom >&2; exit 3' |"))
    with pytest.raises(AudioError, match="cannot run no-such-program-here"):
        read_span(Utterance("p", "no-such-program-here |"))
