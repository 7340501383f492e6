"""Fit the entropy tables of `codec.format.entropy` on a model's codes (`codec fit-entropy`): counts, pruning, weights.

Input: the codes of many utterances, each [levels * G, frames] in level-major order, at all of the model's levels
(what `codec tokens --format npy` writes with the default pattern). Codes are cut into packets of
`packet_frames` frames, as the coder sees them (the previous-frame context starts afresh in each packet).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from codec.errors import CodecError
from codec.format.entropy import (
    BETA,
    COMPONENTS,
    EXP_TOP,
    LOG_BITS,
    MAX_COUNT,
    MAX_WEIGHT,
    SOURCES,
    WEIGHT_BITS,
    EntropyTables,
    context_codes,
    log_rows,
)  # fmt: skip

PACKET_FRAMES = 51  # frames of a 1024-byte packet at 8 kbps of a 50 Hz, 2 x 8 x 10-bit model: about what files use
HELD_OUT = 10  # every HELD_OUT-th utterance fits the mixture weights instead of the counts
NEWTON_STEPS = 30
WEIGHT_FIT_CODES = 100_000  # held-out codes per codebook that the experts' weights are fitted on (at most)
CLUSTERS = 32  # context codes of a codebook are grouped into this many clusters (docs/ENTROPY.md: it pays)
JOINT_CLUSTERS = 64  # pairs of clusters of a component a*b are grouped into this many
CLUSTER_STEPS = 15


def _symbols(codes: np.ndarray, G: int, K: int, packet_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codebook, code, context codes [sources, n]) of every code of one utterance [N, F], cut into packets as the
    coder sees them (`codec.format.entropy.context_codes`: the one place that says where a context sits)."""
    N, F = codes.shape
    parts = [
        context_codes(codes[:, s : s + packet_frames].T[:, None, :], N // G, G, K) for s in range(0, F, packet_frames)
    ]
    return tuple(np.concatenate(x, axis=-1) for x in zip(*parts, strict=True))


def fit_tables(
    utterances: Iterable[np.ndarray],
    *,
    model_id: str,
    model_name: str,
    num_groups: int,
    num_levels: int,
    codebook_size: int,
    min_count: int = 3,
    packet_frames: int = PACKET_FRAMES,
    clusters: int = CLUSTERS,
    joint_clusters: int = JOINT_CLUSTERS,
    components: tuple[str, ...] = COMPONENTS,
) -> EntropyTables:
    """Count contexts on every utterance but each HELD_OUT-th, fit the experts' weights on those, then count on
    all. `min_count`: pairs seen fewer times are pruned (their counts go to the histogram), which keeps the file
    small at a small cost in bits (docs/ENTROPY.md). Each source's context codes are first grouped into `clusters`
    clusters of codes that predict alike (per codebook, fitted on the counting part), which both shrinks the tables
    and predicts unseen pairs better than the raw pairs do; a joint component a*b groups the pairs of a's and b's
    clusters into `joint_clusters`."""
    G, L, K = num_groups, num_levels, codebook_size
    P = G * L
    fit_parts, held_parts = [], []
    for i, codes in enumerate(utterances):
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] != P:
            raise CodecError(f"utterance {i} has codes of shape {codes.shape}; expected [{P}, frames] (all levels)")
        if codes.size and (codes.min() < 0 or codes.max() >= K):
            raise CodecError(f"utterance {i} has codes outside 0..{K - 1}; were they made by this model?")
        if codes.shape[1]:
            (held_parts if i % HELD_OUT == HELD_OUT - 1 else fit_parts).append(_symbols(codes, G, K, packet_frames))
    if not fit_parts:
        raise CodecError("no codes to fit the entropy tables on")
    if not held_parts:
        held_parts = fit_parts[-1:]
    fit = [np.concatenate(x, axis=-1) for x in zip(*fit_parts, strict=True)]
    held = [np.concatenate(x, axis=-1) for x in zip(*held_parts, strict=True)]
    Q, Qj = max(1, min(clusters, K)), max(1, joint_clusters)
    sources = [s for s in SOURCES if any(s in j.split("*") for j in components)]
    maps = {}
    for s in sources:  # [P, K + 1] -> 0..Q (Q: no context, or a code never seen)
        m = _cluster_map(fit[0], fit[1], fit[2][SOURCES.index(s)], K + 1, P, K, Q)
        m[:, K] = Q
        maps[s] = m
    for j in components:
        if "*" in j:  # [P, (Q + 1)**2] -> 0..Qj
            maps[j] = _cluster_map(fit[0], fit[1], _context(j, fit, maps, Q), (Q + 1) ** 2, P, K, Qj)
    fit, held = ((cb, code, np.stack([_context(j, (cb, code, ctx), maps, Q) for j in components]))
                 for cb, code, ctx in (fit, held))  # fmt: skip
    rows = [(Qj if "*" in j else Q) + 1 for j in components]
    counted, _ = _count_tables(fit, P, K, rows, min_count, components)
    weights, held_bits = _fit_weights(counted, held, P, K, rows, components)
    full = [np.concatenate([a, b], axis=-1) for a, b in zip(fit, held, strict=True)]
    arrays, stats = _count_tables(full, P, K, rows, min_count, components)
    arrays.update(weights=weights, log2=LOG2, exp2=EXP2)
    for name, m in maps.items():
        arrays[f"{name}.map"] = m.reshape(-1).astype(np.uint16)
    info = {
        "frames": int(full[1].size // P),
        "held_out_bits_per_codebook": held_bits,
        "weights": {  # high step, low step
            name: [[round(float(w) / 2**WEIGHT_BITS, 3) for w in weights[:, i, k]] for k in (0, 1)]
            for i, name in enumerate(("unigram", *components))
        },
        "min_count": min_count,
        "joint_clusters": Qj,
        "packet_frames": packet_frames,
        "beta": BETA,
        **stats,
    }
    return EntropyTables(model_id, model_name, G, L, K, arrays, info, components=tuple(components), clusters=Q)


def _context(component: str, part, maps, Q) -> np.ndarray:
    """The context value (a cluster, or for a*b before its own clustering: a pair of clusters) of every symbol."""
    codebook, _, ctx = part
    q = [maps[s][codebook, ctx[SOURCES.index(s)]] for s in component.split("*")]
    if len(q) == 1:
        return q[0]
    pair = q[0] * (Q + 1) + q[1]
    return maps[component][codebook, pair] if component in maps else pair


def _dense(codebook, code, ctx, P, K, R):
    """Counts [P, R, K] of (context, code) per codebook; R context values."""
    n = np.bincount((codebook * R + ctx) * K + code, minlength=P * R * K)
    return n.reshape(P, R, K)


def _cluster_map(codebook, code, ctx, V, P, K, Q) -> np.ndarray:
    """Per codebook, a cluster (0..Q-1) of each of V context values, Q for a value never seen: values whose
    following codes are alike share one.

    Hard EM on the counts: each context value goes to the cluster whose smoothed distribution gives its codes the
    highest likelihood; clusters start as the values in order of count, dealt round-robin."""
    maps = np.full((P, V), Q, dtype=np.int64)
    u = _unigram(codebook, code, P, K).astype(np.float64)
    u /= u.sum(1, keepdims=True)
    counts = _dense(codebook, code, ctx, P, K, V)
    for p in range(P):
        n = counts[p].astype(np.float64)
        seen = n.sum(1) > 0
        assign = np.empty(V, dtype=np.int64)
        assign[np.argsort(-n.sum(1), kind="stable")] = np.arange(V) % Q
        for _ in range(CLUSTER_STEPS):
            m = np.zeros((Q, K))
            np.add.at(m, assign, n)
            log_p = np.log((m + BETA / 2 * u[p]) / (m.sum(1, keepdims=True) + BETA / 2))
            assign = (n @ log_p.T).argmax(1)
        maps[p] = np.where(seen, assign, Q)
    return maps


def _unigram(codebook, code, P, K):
    return np.bincount(codebook * K + code, minlength=P * K).reshape(P, K) + 1


# the fixed-point logarithm and power of two of the coder, stored in the tables (computed here, once, in floating
# point: what a decoder uses is these integers, never its own machine's log or exp)
LOG2 = np.array([round((1 << LOG_BITS) * math.log2(1 + i / 4096)) for i in range(4096)], dtype=np.int64)
EXP2 = np.array(
    [max(1, round(2.0 ** (EXP_TOP - i / (1 << LOG_BITS)))) for i in range(EXP_TOP << LOG_BITS)], dtype=np.int64
)


def _count_tables(part, P, K, rows, min_count, components) -> tuple[dict[str, np.ndarray], dict]:
    """The integer arrays of `EntropyTables` (all but the weights) counted on `part`: per component, the kept
    (context, code) counts and each row's `extra` (BETA plus its pruned counts, which go to the histogram)."""
    codebook, code, ctx = part
    unigram = _unigram(codebook, code, P, K)
    if int(unigram.sum(1).max()) >= MAX_COUNT:
        raise CodecError(f"over {MAX_COUNT} codes per codebook to fit the entropy tables on; fit them on fewer")
    arrays: dict[str, np.ndarray] = {"unigram": unigram.astype(np.int64)}
    stats = {}
    for j, (name, R) in enumerate(zip(components, rows, strict=True)):
        n = _dense(codebook, code, ctx[j], P, K, R).reshape(P * R, K)
        kept = np.where(n >= min_count, n, 0)
        r, cols = np.nonzero(kept)
        arrays[f"{name}.indptr"] = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=P * R))])
        arrays[f"{name}.codes"] = cols.astype(np.uint16)
        counts = kept[r, cols]
        arrays[f"{name}.counts"] = counts.astype(np.uint16 if counts.size == 0 or counts.max() < 2**16 else np.int64)
        arrays[f"{name}.extra"] = BETA + n.sum(1) - kept.sum(1)
        stats[f"{name}_pairs"] = int(len(r))
    return arrays, stats


def _fit_weights(arrays, held, P, K, rows, components) -> tuple[np.ndarray, list[float]]:
    """The experts' weights [P, 1 + components, 2] (fixed point) per codebook and step that maximise the likelihood
    of held-out codes under the coder's own fixed-point logs (Newton's method: the log-likelihood of a product of
    experts is concave in the weights); and the held-out bits per code of each codebook under the rounded weights."""
    B = 1 << (K.bit_length() // 2)
    H = K // B
    unigram = arrays["unigram"]
    logs = [log_rows(unigram, np.ones(P, np.int64), np.arange(P + 1) * 0, [], [], np.arange(P), LOG2, B)]
    for j, R in zip(components, rows, strict=True):
        owner = np.repeat(np.arange(P), R)
        logs.append(log_rows(unigram, arrays[f"{j}.extra"], arrays[f"{j}.indptr"], arrays[f"{j}.codes"],
                             arrays[f"{j}.counts"], owner, LOG2, B))  # fmt: skip
    codebook, code, ctx = held
    weights = np.zeros((P, 1 + len(components), 2), dtype=np.int64)
    bits = []
    for p in range(P):
        at = np.flatnonzero(codebook == p)
        at = at[:: max(1, -(-len(at) // WEIGHT_FIT_CODES))]
        hi, lo = code[at] // B, code[at] % B
        r = [np.full(len(at), p)] + [p * R + ctx[j, at] for j, R in enumerate(rows)]
        f_hi = np.stack([h[i] for (h, _), i in zip(logs, r, strict=True)], 1)  # [n, experts, H]
        f_lo = np.stack([c.reshape(len(c), H, B)[i, hi] for (_, c), i in zip(logs, r, strict=True)], 1)  # [n, ., B]
        total = 0.0
        for k, (f, y) in enumerate(((f_hi, hi), (f_lo, lo))):
            f = f * (math.log(2) / (1 << LOG_BITS))  # natural-log units
            w = np.clip(
                np.rint(_newton(f, y) * (1 << WEIGHT_BITS)), -MAX_WEIGHT << WEIGHT_BITS, MAX_WEIGHT << WEIGHT_BITS
            )
            weights[p, :, k] = w
            total += _nll(w / (1 << WEIGHT_BITS), f, y)[0]
        bits.append(round(total / math.log(2) / max(len(at), 1), 3))
    return weights, bits


def _nll(a, f, y):
    """Negative log-likelihood of codes y [n] under softmax(f @ a) (f [n, experts, symbols]), and the softmax."""
    z = np.einsum("j,njs->ns", a, f)
    z -= z.max(1, keepdims=True)
    lse = np.log(np.exp(z).sum(1))
    return float((lse - z[np.arange(len(y)), y]).sum()), np.exp(z - lse[:, None])


def _newton(f, y) -> np.ndarray:
    """Weights that minimise `_nll` (a little ridge keeps experts that say the same thing finite), by Newton's method
    with backtracking from the plain average of the context experts."""
    n, J, _ = f.shape
    a = np.full(J, 1.0 / max(J - 1, 1))
    a[0] = 0.0
    if n == 0:
        return a
    ridge = 1e-4 * n
    target = f[np.arange(n), :, y].sum(0)
    loss, p = _nll(a, f, y)
    for _ in range(NEWTON_STEPS):
        mean = np.einsum("ns,njs->nj", p, f)
        grad = mean.sum(0) - target + ridge * a
        hess = np.einsum("ns,njs,nks->jk", p, f, f) - mean.T @ mean + ridge * np.eye(J)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-4:
            new = a - t * step
            new_loss, new_p = _nll(new, f, y)
            if new_loss + 0.5 * ridge * new @ new <= loss + 0.5 * ridge * a @ a - 1e-4 * t * grad @ step:
                break
            t /= 2
        else:
            break
        gain = loss + 0.5 * ridge * a @ a - new_loss - 0.5 * ridge * new @ new
        a, loss, p = new, new_loss, new_p
        if gain < 1e-6 * n:
            break
    return a


def read_token_dir(folder: str | Path, model) -> list[np.ndarray]:
    """The codes of a `codec tokens --format npy` folder made by `model` at all its levels (pattern parallel)."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    fix = f"make it with `codec tokens --data DATA --out {folder} --model MODEL --format npy` (all levels)"
    if not manifest_path.is_file():
        raise CodecError(f"{folder} is not a `codec tokens` folder (no manifest.json); {fix}")
    try:
        manifest = json.loads(manifest_path.read_text())
        digest = manifest["model"]["weights_hash"]
        levels, fmt, pattern = manifest["levels"], manifest["format"], manifest["pattern"]
        utterances = manifest["utterances"]
    except (ValueError, KeyError, TypeError):
        raise CodecError(f"{manifest_path} is damaged or of another version; {fix}") from None
    if not digest.startswith(model.model_id):
        raise CodecError(
            f"the tokens in {folder} were made by model id {digest[:8]}, not by {model.name} "
            f"(id {model.model_id}); {fix}"
        )
    if fmt != "npy" or pattern.get("name") != "parallel" or pattern.get("offsets"):
        raise CodecError(f"the tokens in {folder} are {fmt}, pattern {pattern.get('name')}; {fix}")
    if levels != model.num_levels:
        raise CodecError(f"the tokens in {folder} hold {levels} of the model's {model.num_levels} levels; {fix}")
    from codec.tokens.writers import npy_name  # the file name of an id

    out = []
    for utt in utterances:
        path = folder / "npy" / npy_name(utt["id"])
        try:
            out.append(np.load(path, allow_pickle=False).astype(np.int64))
        except (OSError, ValueError) as e:
            raise CodecError(f"cannot read {path} ({e}); {fix}") from None
    return out
