"""`codec tokens`: tokens equal `codec encode`, bucketing never changes codes, formats read back exactly,
resume after a crash equals an uninterrupted run, and bad input lands in failed.list."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import soundfile as sf
import torch

from codec.cli import main
from codec.errors import CodecError
from codec.format.bitstream import CodesReader
from codec.tokens import TokenDataset, extract_tokens, open_tokens
from codec.tokens.extract import _encode, build_pattern
from codec.tokens.writers import WORK, Journal
from tests.conftest import tone

# lengths in seconds and rates: none a whole number of frames (hop 12 at 8 kHz), two rates to resample
CLIPS = {"a": (0.31, 8000), "b": (0.07, 11025), "c": (0.5, 8000), "d/e": (0.2, 16000), "f": (0.013, 8000)}
OUTPUTS = ("manifest.json", "utt2num_frames", "failed.list", "tokens.bin", "tokens.idx.npy")


@pytest.fixture
def corpus(tmp_path):
    folder = tmp_path / "audio"
    for i, (name, (seconds, rate)) in enumerate(CLIPS.items()):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"{name}.wav", tone(seconds, rate, seed=i).T, rate)
    return folder


def run(model, data, out, **kw):
    kw = {"levels": 3, "fmt": "packed", "num_workers": 0, "progress": False, **kw}
    return extract_tokens(model, data, out, **kw)


def test_tokens_equal_codec_encode(tmp_path, corpus, tiny_model, tiny_model_file):
    run(tiny_model, corpus, tmp_path / "out", levels=2, pattern="delay", offsets=True, batch_size=3)
    reader = open_tokens(tmp_path / "out")
    assert reader.ids == ["a", "b", "c", "d/e", "f"]
    for utt in reader.ids:
        codes_file = tmp_path / f"{utt.replace('/', '_')}.codes"
        args = ["encode", str(corpus / f"{utt}.wav"), str(codes_file), "-m", str(tiny_model_file), "-l", "2", "-q"]
        assert main(args) == 0
        with open(codes_file, "rb") as f:
            packets = list(CodesReader(f).packets())
        expected = np.concatenate([p.codes for p in packets])[:, 0].T  # [N, F] of the one channel
        assert np.array_equal(reader.codes(utt), expected)
        assert reader.num_frames(utt) == expected.shape[1]


def test_bucketed_batches_equal_one_utterance_at_a_time(tiny_model):
    audios = [tone(s, 8000, seed=i)[0] for i, s in enumerate([0.4, 0.013, 0.25, 0.1003, 0.0015])]
    batched = _encode(tiny_model, audios, 4)
    for audio, codes in zip(audios, batched, strict=True):
        assert torch.equal(codes, tiny_model.encode(torch.from_numpy(audio)[None, None], 4)[0])


def test_long_utterance_streams_in_blocks(monkeypatch, tiny_model):
    import codec.tokens.extract as extract

    monkeypatch.setattr(extract, "LONG_SECONDS", 0.1)
    monkeypatch.setattr(extract, "BLOCK_SECONDS", 0.037)  # blocks that do not divide frames
    audio = tone(0.3, 8000)[0]
    (codes,) = _encode(tiny_model, [audio], 3)
    assert torch.equal(codes, tiny_model.encode(torch.from_numpy(audio)[None, None], 3)[0])


def test_batch_size_and_workers_do_not_change_output(tmp_path, corpus, tiny_model):
    run(tiny_model, corpus, tmp_path / "one", batch_size=1)
    run(tiny_model, corpus, tmp_path / "many", batch_size=4, num_workers=2, max_batch_seconds=0.6)
    for name in OUTPUTS:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "many" / name).read_bytes(), name


@pytest.mark.parametrize("fmt", ["npy", "ark", "packed"])
def test_every_format_reads_back_exactly(tmp_path, corpus, tiny_model, fmt):
    if fmt == "ark":
        pytest.importorskip("kaldiio")
    run(tiny_model, corpus, tmp_path / "raw", fmt="npy")  # the codes, parallel pattern
    raw = open_tokens(tmp_path / "raw")
    run(tiny_model, corpus, tmp_path / fmt, fmt=fmt, pattern="stack-delay", offsets=True, batch_size=2)
    reader = open_tokens(tmp_path / fmt)
    pattern = build_pattern("stack-delay", tiny_model, 3, offsets=True)
    assert reader.pattern == pattern and reader.ids == raw.ids
    for i, (utt, tokens) in enumerate(reader):
        codes = raw[utt]
        assert codes.dtype == np.uint16 and tokens.dtype == np.uint16
        assert np.array_equal(tokens, pattern.apply(codes))
        assert np.array_equal(reader[i], tokens)
        assert np.array_equal(reader.codes(utt), codes)
    manifest = json.loads((tmp_path / fmt / "manifest.json").read_text())
    assert manifest["utterances"][0]["shape"] == list(reader["a"].shape)
    # a reader pickles into DataLoader workers; the Dataset pads batches with the pattern's pad token
    dataset = TokenDataset(pickle.loads(pickle.dumps(reader)))
    loader = torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=dataset.collate)
    batch = next(iter(loader))
    assert batch["ids"] == ["a", "b", "c"]
    for b, utt in enumerate(batch["ids"]):
        T = reader[utt].shape[1]
        assert torch.equal(batch["tokens"][b, :, :T], torch.from_numpy(reader[utt].astype(np.int64)))
        assert (batch["tokens"][b, :, T:] == pattern.pad_id).all()
        assert torch.equal(batch["mask"][b, :, :T], torch.from_numpy(pattern.mask(reader.num_frames(utt))))
    codes_batch = TokenDataset(reader, codes=True)[1]["tokens"]
    assert torch.equal(codes_batch, torch.from_numpy(raw["b"].astype(np.int64)))


def test_packed_reader_windows(tmp_path, corpus, tiny_model):
    run(tiny_model, corpus, tmp_path / "out", pattern="flatten")
    reader = open_tokens(tmp_path / "out")
    whole = reader["c"]
    assert whole.shape == (1, 6 * reader.num_frames("c"))
    assert np.array_equal(reader.window("c", 5, 40), whole[:, 5:45])
    with pytest.raises(IndexError):
        reader.window("c", whole.shape[1] - 1, 2)
    with pytest.raises(KeyError):
        reader["nope"]


def test_resume_after_crash_equals_uninterrupted_run(tmp_path, corpus, tiny_model, monkeypatch):
    (corpus / "bad.wav").write_bytes(b"RIFF but not really audio")
    run(tiny_model, corpus, tmp_path / "clean", batch_size=2)
    commits = {"n": 0}
    real_commit = Journal.commit

    def crash_after_two_batches(self, records):
        if commits["n"] == 2:
            raise KeyboardInterrupt("simulated crash")
        commits["n"] += 1
        real_commit(self, records)

    monkeypatch.setattr(Journal, "commit", crash_after_two_batches)
    with pytest.raises(KeyboardInterrupt):
        run(tiny_model, corpus, tmp_path / "crashed", batch_size=2)
    monkeypatch.setattr(Journal, "commit", real_commit)
    work = tmp_path / "crashed" / WORK
    assert not (tmp_path / "crashed" / "manifest.json").exists()
    # a crash in the middle of writing: a half-written record in the data part and a torn journal line
    with open(work / "rank0.bin", "ab") as f:
        f.write(b"\x07" * 13)
    with open(work / "rank0.jsonl", "ab") as f:
        f.write(b'{"id":"c","num_fr')
    done_before = sum(b'"shape"' in line for line in (work / "rank0.jsonl").read_bytes().splitlines())
    assert 0 < done_before < len(CLIPS)
    summary = run(tiny_model, corpus, tmp_path / "crashed", batch_size=2)
    assert summary["this_run"]["resumed_from"] == done_before
    assert summary["this_run"]["utterances"] == len(CLIPS) - done_before
    for name in OUTPUTS:
        assert (tmp_path / "clean" / name).read_bytes() == (tmp_path / "crashed" / name).read_bytes(), name
    assert not work.exists()
    again = run(tiny_model, corpus, tmp_path / "crashed")  # finished: nothing to do
    assert again["up_to_date"]
    with pytest.raises(CodecError, match="other data or options"):
        run(tiny_model, corpus, tmp_path / "crashed", levels=2)


def test_resume_with_other_options_is_refused(tmp_path, corpus, tiny_model, monkeypatch):
    monkeypatch.setattr(Journal, "commit", lambda self, records: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        run(tiny_model, corpus, tmp_path / "out")
    monkeypatch.undo()
    with pytest.raises(CodecError, match="unfinished extraction with other pattern"):
        run(tiny_model, corpus, tmp_path / "out", pattern="delay")


def test_bad_input_goes_to_failed_list(tmp_path, tiny_model):
    sf.write(tmp_path / "good.wav", tone(0.2, 8000).T, 8000)
    sf.write(tmp_path / "empty.wav", np.zeros((0, 1), np.float32), 8000)
    sf.write(tmp_path / "short.wav", tone(0.001, 8000).T, 8000)  # 8 samples: under one frame (12)
    (tmp_path / "text.wav").write_text("hello")
    scp = tmp_path / "wav.scp"
    scp.write_text(
        f"good {tmp_path / 'good.wav'}\nempty {tmp_path / 'empty.wav'}\nshort {tmp_path / 'short.wav'}\n"
        f"text {tmp_path / 'text.wav'}\nmissing {tmp_path / 'nope.wav'}\npipe false |\n"
        f"piped cat {tmp_path / 'good.wav'} |\n"
    )
    summary = run(tiny_model, scp, tmp_path / "out", fmt="npy")
    assert (summary["extracted"], summary["failed"], summary["skipped_empty"], summary["skipped_short"]) == (2, 3, 1, 1)
    failed = dict(line.split(" ", 1) for line in (tmp_path / "out" / "failed.list").read_text().splitlines())
    assert sorted(failed) == ["empty", "missing", "pipe", "short", "text"]
    assert failed["empty"].startswith("empty:") and failed["short"].startswith("short:")
    assert all(failed[k].startswith("unreadable:") for k in ("missing", "pipe", "text"))
    reader = open_tokens(tmp_path / "out")
    assert reader.ids == ["good", "piped"] and np.array_equal(reader["good"], reader["piped"])
    frames = reader.num_frames("good")
    assert (tmp_path / "out" / "utt2num_frames").read_text() == f"good {frames}\npiped {frames}\n"


def test_kaldi_data_dir_with_segments(tmp_path, tiny_model):
    audio = tone(0.6, 8000)
    sf.write(tmp_path / "rec.wav", audio.T, 8000)
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"rec1 {tmp_path / 'rec.wav'}\n")
    (data / "segments").write_text("utt2 rec1 0.25 -1\nutt1 rec1 0.1 0.2\n")
    (data / "utt2dur").write_text("utt1 0.1\nutt2 0.35\n")
    run(tiny_model, data, tmp_path / "out", fmt="npy", levels=4)
    reader = open_tokens(tmp_path / "out")
    assert reader.ids == ["utt1", "utt2"]
    for utt, (start, end) in {"utt1": (800, 1600), "utt2": (2000, 4800)}.items():
        expected = tiny_model.encode(torch.from_numpy(audio[:, start:end])[None], 4)[0].numpy()
        assert np.array_equal(reader.codes(utt), expected)


def test_cli_tokens(tmp_path, corpus, tiny_model_file, capsys):
    out = tmp_path / "out"
    args = ["tokens", "--data", str(corpus), "--out", str(out), "-m", str(tiny_model_file), "--bitrate", "11",
            "--format", "packed", "--pattern", "coarse-first", "--num-workers", "0", "-q"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"{out}: 5 of 5 utterances" in printed and "audio-hours/hour" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["levels"] == 2 and manifest["num_codebooks"] == 4  # 5.33 kbps per level: 11 rounds down
    assert manifest["level_order"] == "level-major: index l*G+g" and manifest["pattern"]["coarse"] == 2
    assert manifest["model"]["weights_hash"] and manifest["bitrate"] == pytest.approx(32000 / 3)
    assert main(["tokens", "--data", str(tmp_path / "nope"), "--out", str(out), "-m", str(tiny_model_file)]) == 1
    assert "--data" in capsys.readouterr().err
