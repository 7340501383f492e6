#!/usr/bin/env python
"""Bytes of plain and entropy-coded .codes files of a set, at every level count, against the unigram bound.

    codec tokens --data ../shared/data/dev --out dev_codes --levels 8 --format npy
    python tools/measure_entropy.py codec/pretrained/grvq16k.entropy dev_codes

Writes whole files (header and packets, default packet size) from each utterance's codes (the first n levels are
the n-level stream), reads the entropy-coded ones back and checks the codes are identical, and prints a JSON line
per level count (docs/ENTROPY.md). The model facts (rate, hop, groups, bits) come from the tokens' manifest.
"""

import io
import json
import sys
import time

import numpy as np

from codec.format import bitstream, entropy
from codec.format.bitstream import CodesHeader, CodesWriter

tables = entropy.load_tables(sys.argv[1])
folder = sys.argv[2]
man = json.load(open(f"{folder}/manifest.json"))
utts = [
    (
        u["id"],
        np.load(f"{folder}/npy/" + __import__("urllib.parse").parse.quote(u["id"], safe="") + ".npy").astype(np.int64),
    )
    for u in man["utterances"]
]
facts = man["model"]
G, K, RATE, HOP = facts["num_groups"], facts["codebook_size"], facts["sample_rate"], facts["hop_length"]
MODEL_ID, BITS = facts["weights_hash"][:8], facts["codebook_size"].bit_length() - 1
rows = []
for levels in range(1, man["levels"] + 1):
    plain = coded = frames = 0
    counts = np.zeros((levels * G, K))
    t_enc = 0.0
    for uid, codes in utts:
        c = codes[: levels * G]
        F = c.shape[1]
        for i in range(levels * G):
            counts[i] += np.bincount(c[i], minlength=K)
        ns = F * HOP  # samples at the model rate (exact length not needed for sizes)
        h = CodesHeader(MODEL_ID, RATE, RATE, 1, HOP, G, levels, BITS, ns)
        he = CodesHeader(MODEL_ID, RATE, RATE, 1, HOP, G, levels, BITS, ns, tables_id=tables.tables_id)
        fpp = bitstream.frames_per_packet(h)
        pk = c.T[:, None, :]
        outp, oute = io.BytesIO(), io.BytesIO()
        wp, we = CodesWriter(outp, h), CodesWriter(oute, he, tables)
        for s in range(0, F, fpp):
            wp.write_packet(pk[s : s + fpp])
            t0 = time.perf_counter()
            we.write_packet(pk[s : s + fpp])
            t_enc += time.perf_counter() - t0
        r = bitstream.CodesReader(io.BytesIO(oute.getvalue()), tables=tables, read_ahead=32)  # as files are read
        back = np.concatenate([p.codes for p in r.packets()])
        assert np.array_equal(back, pk), uid  # lossless: the same codes, so the same audio
        plain += len(outp.getvalue())
        coded += len(oute.getvalue())
        frames += F
    p = counts / counts.sum(1, keepdims=True)
    uni_bits = float(-(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1)), 0)).sum(1).sum())  # per frame
    seconds = frames * HOP / RATE
    row = dict(
        levels=levels,
        kbps=levels * G * BITS * RATE / HOP / 1000,
        files=len(utts),
        seconds=round(seconds, 1),
        plain_bytes=plain,
        entropy_bytes=coded,
        saving_percent=round(100 * (1 - coded / plain), 2),
        entropy_kbps=round(coded * 8 / seconds / 1000, 3),
        plain_kbps=round(plain * 8 / seconds / 1000, 3),
        unigram_bound_kbps=round(uni_bits * RATE / HOP / 1000, 3),
        vs_unigram_bound_percent=round(100 * (1 - coded * 8 / seconds / (uni_bits * RATE / HOP)), 2),
        bits_per_code=round(coded * 8 / (frames * levels * G), 3),
    )
    print(json.dumps(row), flush=True)
