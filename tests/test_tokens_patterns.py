"""Codebook patterns: exact inverses, masks, offsets, padding, and the documented layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from codec.tokens.patterns import PATTERNS, make_pattern, pattern_from_json

SHAPES = [(1, 1, 2), (2, 5, 16), (3, 17, 1024), (8, 4, 65536), (5, 0, 16)]  # (N, F, K)


def _pattern(name, N, K, offsets=False):
    return make_pattern(name, N, K, offsets=offsets, **({"coarse": min(2, N)} if name == "coarse-first" else {}))


@pytest.mark.parametrize("name", PATTERNS)
@pytest.mark.parametrize("N,F,K", SHAPES)
@pytest.mark.parametrize("offsets", [False, True])
def test_inverse_is_exact(name, N, F, K, offsets):
    rng = np.random.default_rng(N * 1000 + F)
    codes = rng.integers(0, K, size=(3, N, F))
    p = _pattern(name, N, K, offsets)
    tokens = p.apply(codes)
    assert tokens.shape == (3, p.num_streams, p.num_steps(F))
    mask = p.mask(F)
    assert mask.sum() == N * F  # every code exactly once
    assert (tokens[:, ~mask] == p.pad_id).all()
    if offsets:  # codebook n's tokens lie in [n K, (n + 1) K): one shared vocabulary
        n_of_cell = p.layout(F)[mask] // max(F, 1)
        assert ((tokens[:, mask] >= n_of_cell * K) & (tokens[:, mask] < (n_of_cell + 1) * K)).all()
    assert tokens.max(initial=0) <= p.max_token < p.vocab_size
    assert np.array_equal(p.invert(tokens, F), codes)
    if F:  # the frame count follows from the steps
        assert np.array_equal(p.invert(tokens), codes)
    as_torch = p.apply(torch.from_numpy(codes))  # torch in, torch out, same values
    assert torch.equal(as_torch, torch.from_numpy(tokens))
    assert torch.equal(p.invert(as_torch, F), torch.from_numpy(codes))
    assert pattern_from_json(p.to_json()) == p


def test_documented_layouts():
    codes = np.array([[0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23]])
    x = -1

    def grid(name, **kw):
        p = make_pattern(name, 3, 32, **kw)
        return np.where(p.mask(4), p.apply(codes), x).tolist()

    assert grid("flatten") == [[0, 10, 20, 1, 11, 21, 2, 12, 22, 3, 13, 23]]
    assert grid("delay") == [[0, 1, 2, 3, x, x], [x, 10, 11, 12, 13, x], [x, x, 20, 21, 22, 23]]
    assert grid("coarse-first") == [[0, 1, 2, 3, 10, 20, 11, 21, 12, 22, 13, 23]]
    assert grid("stack-delay") == [[0, 10, 20, 3, 13, 23], [x, 1, 11, 21, x, x], [x, x, 2, 12, 22, x]]
    # two streams, frames dealt round-robin, each frame's stack over 3 steps, the second stream 2 steps late
    assert grid("stack-delay", streams=2, delay=2) == [[0, 10, 20, 2, 12, 22, x, x], [x, x, 1, 11, 21, 3, 13, 23]]


@pytest.mark.parametrize("streams,delay", [(2, 1), (2, 2), (4, 1), (1, 0), (3, 3)])
def test_stack_delay_parameters_invert(streams, delay):
    p = make_pattern("stack-delay", 3, 8, streams=streams, delay=delay)
    codes = np.random.default_rng(0).integers(0, 8, size=(3, 11))
    tokens = p.apply(codes)
    assert tokens.shape[0] == streams and p.mask(11).sum() == 33
    assert np.array_equal(p.invert(tokens, 11), codes)
    for f in range(11):  # each frame's stack is consecutive steps of one stream, coarse to fine
        idx = p.layout(11)
        cells = [np.argwhere(idx == n * 11 + f)[0] for n in range(3)]
        assert len({c[0] for c in cells}) == 1 and [c[1] - cells[0][1] for c in cells] == [0, 1, 2]


def test_apply_batch_pads_and_masks():
    p = make_pattern("delay", 4, 16, offsets=True)
    rng = np.random.default_rng(1)
    codes = [rng.integers(0, 16, size=(4, f)) for f in (5, 2, 9)]
    for kind in (np.asarray, torch.from_numpy):
        tokens, mask = p.apply_batch([kind(c) for c in codes])
        assert tuple(tokens.shape) == (3, 4, 9 + 3)
        for b, c in enumerate(codes):
            T = p.num_steps(c.shape[1])
            assert np.array_equal(np.asarray(mask[b, :, :T]), p.mask(c.shape[1]))
            assert not np.asarray(mask[b, :, T:]).any() and (np.asarray(tokens[b, :, T:]) == p.pad_id).all()
            assert np.array_equal(np.asarray(p.invert(tokens[b, :, :T], c.shape[1])), c)


def test_invert_rejects_bad_tokens():
    p = make_pattern("delay", 2, 16, offsets=True)
    tokens = p.apply(np.ones((2, 3), np.int64))
    bad = tokens.copy()
    bad[1, 1] = 3  # codebook 1's tokens live in [16, 32)
    with pytest.raises(ValueError, match="range"):
        p.invert(bad)
    bad = tokens.copy()
    bad[1, 0] = 5  # a pad cell
    with pytest.raises(ValueError, match="pad"):
        p.invert(bad)
    with pytest.raises(ValueError, match="collides"):
        make_pattern("delay", 2, 16, pad_id=3)
    with pytest.raises(ValueError, match="unknown pattern"):
        make_pattern("zigzag", 2, 16)


def test_custom_pad_id_and_vocab():
    p = make_pattern("delay", 2, 1024, pad_id=2048)
    assert p.vocab_size == 2049 and p.max_token == 2048
    q = make_pattern("parallel", 2, 65536)
    assert q.max_token == 65535  # no pad cells: uint16 still holds every token
