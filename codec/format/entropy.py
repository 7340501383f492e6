"""Lossless entropy coding of codes: a context model fitted on training codes, and a range coder (constriction).

Each code is coded under a product of experts over the K codes of its codebook (its group g and level l), fitted
by counting on a model's training codes:

    P(c) proportional to u(c)**w0 * product over components j of P(c | the code's context under j)**w_j

`u` is the codebook's smoothed histogram. A component conditions on one context code (a *source*: `prev`, the
previous frame's code at the same group and level; `prev2`, two frames back; `coarse`, this frame's code one level
coarser, same group; `coarse2`, two levels coarser; `pcoarse`, the previous frame's code one level coarser; `cross`,
at level 0 the previous frame's code of the next group, deeper this frame's coarser code of the next group; `prevx`,
the previous frame's code of the next group at the same level) grouped into clusters, or on the pair of two
sources' clusters (`prev*coarse`), grouped again. Each component's counts are smoothed towards `u` (a Dirichlet
prior of weight `BETA`), with the rare pairs pruned (counted with `u`); the weights (any sign) are fitted per
codebook and coding step on held-out codes (docs/ENTROPY.md has what each choice pays). Every context of a code
sits one or two frames back, or at a coarser level of the same frame, so a decoder recovers a packet diagonal by
diagonal (frame + level = d), all groups, levels and channels of a diagonal in two calls of the range decoder
(`_Coding`: a code's high part, then its low part):

    level 2 |  2  3  4  5          the number is the diagonal: a code's contexts are on the ones before,
    level 1 |  1  2  3  4          so diagonal d decodes in one step once d - 1 and d - 2 are known
    level 0 |  0  1  2  3
            +------------ frame

**Determinism.** No floating-point logarithm or power on the coding path: the tables hold integer counts, integer
weights and two integer tables (`log2`, `exp2`); each row's logarithms come from integer frequencies by their bit
length and `log2` (`_ilog2`), are weighted and rounded with integer arithmetic, summed in int32, and turned into
frequencies (integers up to 2**EXP_TOP, a step's 32 summing below 2**23, exact in float32) by `exp2` (`_probs`).
constriction turns those into its 24-bit fixed-point model with IEEE arithmetic in a fixed order: an encoder and a
decoder on different machines agree bit for bit (`tests/test_entropy.py` pins the bytes of a coded packet).

**Packets** are coded independently (the previous-frame contexts start afresh in each), so a damaged packet loses only
its own frames. A file's packets are decoded in lock-step (`decode_packets`): each diagonal's numpy calls serve all of
them, then each packet's own range decoder reads its own symbols. The tables live in a file beside the model
(`<model>.entropy`, a safetensors file of integer arrays with the model id, the components and the format in its
metadata), written by `codec fit-entropy`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from codec.errors import CodecError

FORMAT = "codec-entropy/3"
SUFFIX = ".entropy"
SOURCES = ("prev", "coarse", "cross", "coarse2", "prev2", "pcoarse", "prevx")  # context codes (`_plan`: where)
# what `codec fit-entropy` fits: the sources alone, and the pairs that paid on dev (docs/ENTROPY.md)
COMPONENTS = (
    "prev",
    "coarse",
    "cross",
    "prev*coarse",
    "prev*cross",
    "coarse*cross",
    "coarse*coarse2",
    "prev2",
    "pcoarse",
    "prevx",
)
BETA = 1024  # weight of the smoothed histogram in each context's counts (Dirichlet prior; docs/ENTROPY.md)
LOG_BITS = 8  # log2 of a frequency in fixed point: units of 2**-8 bits
WEIGHT_BITS = 10  # the experts' weights in fixed point: units of 2**-10
MAX_WEIGHT = 4  # |weight|: bounds the sums of weighted logs (and so the coder's table of powers)
MAX_COMPONENTS = 10
MAX_COUNT = 2**26  # codes per codebook: a frequency (count * U) stays below 2**53, a block's sum below 2**61
EXP_TOP = 18  # the likeliest symbol of a step gets 2**18; 32 symbols sum to at most 2**23 (exact in float32)
CHUNK_SYMBOLS = 8192  # steps whose probability rows are gathered at once when encoding (bounds memory)
MAX_TABLE_BYTES = 256 * 2**20  # an .entropy file larger than this is refused unread
MAX_DENSE_ENTRIES = 2**25  # rows x codes of all components, held as float32 when coding (128 MiB)


def tables_path(model_path: str | Path) -> Path:
    """Where the tables of the model file at `model_path` live: beside it, `<stem>.entropy`."""
    return Path(model_path).with_suffix(SUFFIX)


# --- the tables ------------------------------------------------------------------------------------------------------
@dataclass
class EntropyTables:
    """The fitted context model of one model's codes (integer arrays; `P` = num_levels * num_groups codebooks).

    `unigram` [P, K]: code counts + 1 (U: their sum per codebook); `weights` [P, 1 + components, 2]: each expert's
    weight (the histogram's first) in the high and the low step, fixed point (WEIGHT_BITS); `log2` [4096] and `exp2`
    [EXP_TOP << LOG_BITS]: the fixed-point logarithm and power of two that the coder uses (`_ilog2`, `_probs`).
    Per source s: `s.map` [P * (K + 1)], the cluster (0..R-1) of each context code of each codebook (code K: no
    context). Per component j, over rows r = p * R + cluster: `indptr` [P * R + 1], `codes` and `counts` [nnz] (the
    kept pairs), `extra` [P * R] (the prior's weight BETA plus the pruned counts); a pair a*b also `map` [P * S * S],
    the cluster of each pair of a's and b's clusters. Row r's frequency of code c is
    `counts[r, c] * U + extra[r] * unigram[c]` (an integer: the smoothed counts times U).
    """

    model_id: str
    model_name: str
    num_groups: int
    num_levels: int
    codebook_size: int
    arrays: dict[str, np.ndarray]
    info: dict
    tables_id: str = ""  # 8 hex digits of the sha256 of the arrays: what a .codes header names
    components: tuple[str, ...] = COMPONENTS
    clusters: int = 32  # of each source's context codes (a component a*b clusters the pairs of a's and b's)
    _dense: _Coding | None = field(default=None, repr=False, compare=False)  # `_coding`, built on first use

    def __post_init__(self) -> None:
        if not self.tables_id:
            self.tables_id = _digest(self.arrays, self.components, self.clusters)

    @property
    def num_codebooks(self) -> int:
        return self.num_levels * self.num_groups

    def save(self, path: str | Path) -> None:
        from safetensors.numpy import save_file

        from codec.atomic import atomic_output

        meta = {
            "format": FORMAT,
            "model_id": self.model_id,
            "model_name": self.model_name,
            "num_groups": str(self.num_groups),
            "num_levels": str(self.num_levels),
            "codebook_size": str(self.codebook_size),
            "tables_id": self.tables_id,
            "components": json.dumps(list(self.components)),
            "clusters": str(self.clusters),
            "info": json.dumps(self.info),
        }
        with atomic_output(path) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in self.arrays.items()}, str(tmp), metadata=meta)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # safetensors writes its file 0600; a tables file is read by everyone


def _digest(arrays: dict[str, np.ndarray], components: tuple[str, ...], clusters: int) -> str:
    h = hashlib.sha256(json.dumps([list(components), clusters]).encode())
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key]).astype("<i8")
        h.update(key.encode() + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()[:8]


def load_tables(path: str | Path) -> EntropyTables:
    """Read and check an .entropy file; every problem is a one-line `CodecError` naming the fix."""
    from safetensors.numpy import load_file

    from codec.modelfile import read_metadata

    path = Path(path)
    fix = "fit it again with `codec fit-entropy` (docs/ENTROPY.md)"
    if not path.is_file():
        raise CodecError(f"entropy tables {path} not found; {fix}")
    if path.stat().st_size > MAX_TABLE_BYTES:
        raise CodecError(f"entropy tables {path} are over {MAX_TABLE_BYTES >> 20} MiB, not a tables file; {fix}")
    try:
        meta = read_metadata(path)
    except CodecError as e:  # said of a model file: say it of the tables
        reason = str(e).split(": ", 1)[-1]
        raise CodecError(f"entropy tables {path} are damaged ({reason}); {fix}") from None
    if meta.get("format") != FORMAT:
        if str(meta.get("format", "")).startswith("codec-entropy/"):  # tables of an older (or newer) codec
            raise CodecError(
                f"entropy tables {path} are of format {meta['format']}, which this codec does not read (it reads "
                f"{FORMAT}): decode files coded with them with the codec release that wrote them, or fit new tables "
                "with `codec fit-entropy`"
            )
        raise CodecError(f"{path} is not an entropy tables file of format {FORMAT}; {fix}")
    try:
        arrays = load_file(str(path))
        G, L, K, Q = (int(meta[k]) for k in ("num_groups", "num_levels", "codebook_size", "clusters"))
        components = tuple(json.loads(meta["components"]))
        tables = EntropyTables(
            meta["model_id"], meta.get("model_name", ""), G, L, K, arrays, json.loads(meta.get("info", "{}")),
            components=components, clusters=Q,
        )  # fmt: skip
    except (KeyError, ValueError, OSError, TypeError, RuntimeError) as e:
        raise CodecError(f"entropy tables {path} are damaged ({type(e).__name__}); {fix}") from None
    if tables.tables_id != meta.get("tables_id"):
        raise CodecError(f"entropy tables {path} are damaged (their checksum does not match); {fix}")
    _check_shapes(tables, path, fix)
    return tables


def _check_shapes(t: EntropyTables, path: Path, fix: str) -> None:
    P, K, Rs = t.num_codebooks, t.codebook_size, t.clusters + 1
    a = t.arrays
    known = set(SOURCES) | {f"{x}*{y}" for x in SOURCES for y in SOURCES if x != y}
    J = len(t.components)
    ok = 2 <= K <= 2**16 and 1 <= t.clusters and P * Rs * Rs <= MAX_DENSE_ENTRIES  # pair lookups: [P, Rs, Rs]
    ok = ok and 1 <= J <= MAX_COMPONENTS and set(t.components) <= known and len(set(t.components)) == J
    ok = ok and a.get("unigram", np.empty(0)).shape == (P, K) and a.get("weights", np.empty(0)).shape == (P, J + 1, 2)
    ok = (
        ok
        and a.get("log2", np.empty(0)).shape == (4096,)
        and a.get("exp2", np.empty(0)).shape == (EXP_TOP << LOG_BITS,)
    )
    if ok:  # the bounds that keep every sum of the coder inside int32 and below 2**23
        u = a["unigram"]
        ok = (
            int(u.min()) >= 1
            and int(u.sum(1).max()) < MAX_COUNT
            and int(np.abs(a["weights"]).max()) <= MAX_WEIGHT << WEIGHT_BITS
        )
        ok = ok and 0 <= int(a["log2"].min()) and int(a["log2"].max()) <= 1 << LOG_BITS
        ok = ok and 1 <= int(a["exp2"].min()) and int(a["exp2"].max()) <= 1 << EXP_TOP
    sources = {s for j in t.components for s in j.split("*")} if ok else set()
    for s in sources:
        m = a.get(f"{s}.map")
        ok = ok and m is not None and m.shape == (P * (K + 1),) and int(m.max()) < Rs
    entries = 0
    for j in t.components if ok else ():
        extra = a.get(f"{j}.extra")
        R = extra.shape[0] // P if extra is not None and extra.ndim == 1 and P else 0
        rows = P * R
        entries += rows * K
        want = {f"{j}.indptr": (rows + 1,), f"{j}.extra": (rows,)}
        if "*" in j:
            want[f"{j}.map"] = (P * Rs * Rs,)
        ok = R >= 1 and all(k in a and a[k].shape == s for k, s in want.items())
        ok = ok and ("*" not in j or int(a[f"{j}.map"].max()) < R) and ("*" in j or R == Rs)
        ok = ok and 1 <= int(extra.min()) and int(extra.max()) < MAX_COUNT
        if not ok:
            break
        indptr = a[f"{j}.indptr"]
        nnz = a[f"{j}.codes"].shape if f"{j}.codes" in a else None
        ok = (
            nnz is not None
            and f"{j}.counts" in a
            and a[f"{j}.counts"].shape == nnz
            and indptr[0] == 0
            and indptr[-1] == nnz[0]
            and bool(np.all(np.diff(indptr) >= 0))
            and (nnz[0] == 0 or 0 <= int(a[f"{j}.codes"].min()) <= int(a[f"{j}.codes"].max()) < K)
            and (nnz[0] == 0 or 0 <= int(a[f"{j}.counts"].min()) <= int(a[f"{j}.counts"].max()) < MAX_COUNT)
        )
    if not ok or entries > MAX_DENSE_ENTRIES:
        raise CodecError(f"entropy tables {path} are damaged (arrays of the wrong shape); {fix}")


def tables_for(model, path: str | Path | None = None) -> EntropyTables | None:
    """The tables of `model`: from `path`, else beside its model file; None when there are none.

    Tables of another model (a different id) are an error when `path` was given, and None otherwise (a model file
    replaced by a new one keeps working, without entropy coding, until its tables are fitted again).
    """
    explicit = path is not None
    if path is None:
        source = getattr(model, "source", None)
        if not source or not tables_path(source).is_file():
            return None
        path = tables_path(source)
    tables = _load_cached(str(Path(path).resolve()), Path(path).stat().st_mtime_ns if Path(path).exists() else 0)
    if tables.model_id != model.model_id:
        if explicit:
            raise CodecError(
                f"entropy tables {path} belong to model id {tables.model_id}, not to {model.name} (id "
                f"{model.model_id}); fit tables for this model with `codec fit-entropy`"
            )
        return None
    return tables


@lru_cache(maxsize=4)
def _load_cached(path: str, mtime: int) -> EntropyTables:
    return load_tables(path)


def check_tables(tables: EntropyTables | None, header, model, name: str) -> EntropyTables:
    """The tables to decode `header`'s entropy-coded packets with, or a one-line error naming the fix."""
    fix = "fit them with `codec fit-entropy` or pass the right file with --tables"
    if tables is None:
        where = tables_path(model.source) if getattr(model, "source", None) else "beside the model file"
        raise CodecError(
            f"{name} is entropy coded with tables {header.tables_id} of model {header.model_id}, and no tables "
            f"for this model were found ({where}); {fix}"
        )
    if tables.model_id != header.model_id:
        raise CodecError(
            f"{name} needs entropy tables of model id {header.model_id} but the tables found belong to model id "
            f"{tables.model_id}; {fix}"
        )
    if tables.tables_id != header.tables_id:
        raise CodecError(
            f"{name} was coded with entropy tables {header.tables_id}, but the tables of model {header.model_id} "
            f"here are {tables.tables_id} (fitted again since); decode it with the tables that coded it (--tables)"
        )
    if (tables.num_groups, tables.codebook_size) != (header.num_groups, 1 << header.bits) or (
        header.levels > tables.num_levels
    ):
        raise CodecError(f"{name}: the entropy tables do not fit its codes (groups, levels or codebook size)")
    return tables


# --- contexts and probability rows -----------------------------------------------------------------------------------
@lru_cache(maxsize=64)
def _plan(frames: int, channels: int, levels: int, groups: int) -> tuple:
    """Symbol order of a packet and where each symbol's context codes are, in a padded array.

    The packet's codes sit in X [C, frames + 2, levels + 2, G] at [c, t + 2, lv + 2, g]; rows 0-1 and columns 0-1
    hold the no-context code K. Symbols go diagonal by diagonal (t + lv), then level, channel, group. Returns flat
    indices into X of each symbol and [len(SOURCES), n] of its context codes, its codebook (lv * G + g), where each
    diagonal starts, and X's shape.
    """
    C, F, L, G = channels, frames, levels, groups
    t, lv, c, g = np.meshgrid(np.arange(F), np.arange(L), np.arange(C), np.arange(G), indexing="ij")
    t, lv, c, g = (a.ravel() for a in (t, lv, c, g))
    order = np.lexsort((g, c, lv, t + lv))
    t, lv, c, g = t[order], lv[order], c[order], g[order]
    shape = (C, F + 2, L + 2, G)
    other = (g + 1) % G

    def index(dt, dl, group):  # X's flat index of the code dt frames back and dl levels coarser
        return np.ravel_multi_index((c, t + 2 - dt, lv + 2 - dl, group), shape)

    at = index(0, 0, g)
    sources = {
        "prev": index(1, 0, g),
        "coarse": index(0, 1, g),
        "coarse2": index(0, 2, g),
        "prev2": index(2, 0, g),  # two frames back
        "pcoarse": index(1, 1, g),  # the previous frame's code one level coarser
        "prevx": index(1, 0, other),  # the previous frame's code of the next group, same level
    }
    if G > 1:  # level 0: the next group's previous frame; deeper: the next group's coarser code
        sources["cross"] = np.where(lv == 0, index(1, 0, other), index(0, 1, other))
    else:  # one group: the previous frame's coarser code (level 0: none)
        sources["cross"] = index(1, 1, g)
    contexts = np.stack([sources[s] for s in SOURCES])
    codebook = lv * G + g
    starts = np.searchsorted(t + lv, np.arange(F + L - 1))
    return at, contexts, codebook, np.append(starts, len(t)), shape


def context_codes(codes: np.ndarray, levels: int, groups: int, codebook_size: int) -> tuple:
    """(codebook [n], code [n], context codes [len(SOURCES), n]) of a packet's codes [frames, C, levels * G], in
    coding order; a missing context (before the packet, above level 1) is the code `codebook_size`."""
    F, C, _ = codes.shape
    at, contexts, codebook, _, shape = _plan(F, C, levels, groups)
    flat = _padded(codes, levels, groups, codebook_size, shape).ravel()
    return codebook, flat[at], flat[contexts]


def _padded(codes: np.ndarray, levels: int, groups: int, K: int, shape: tuple) -> np.ndarray:
    C, F1, _, G = shape
    X = np.full(shape, K, dtype=np.int64)
    X[:, 2:, 2:, :] = np.asarray(codes, dtype=np.int64).reshape(F1 - 2, C, levels, G).transpose(1, 0, 2, 3)
    return X


@dataclass
class _Coding:
    """What coding needs, built once per tables: every component's rows of weighted logarithms, split for two steps.

    A code c is coded as hi = c // B then lo = c % B (B = 2**ceil(log2(K) / 2); K = H * B), each under its own
    product of experts: P(hi) is proportional to the product over experts of (the expert's sum over block hi) to the
    power of its high-step weight, P(lo | hi) to the product of the experts' frequencies in block hi to the power of
    their low-step weights (`_probs`). So the range coder sees alphabets of B symbols (32 at K = 1024), and a symbol's
    probabilities come from 2 * B values per component. `table` [rows of all components * (H + 1), B] (int16 where
    they fit, else int32; log units, each step centred on zero): per row, step 0 the weighted logs of the block sums
    (padding symbols, where H < B, far below any other), step 1 + hi those of block hi (the histogram's own
    weighted logs are added to the first component's rows); `row` holds the index of a row's step 0.

    A symbol's row of component j is `row[j * P * S * S + codebook * S * S + pair]`, pair = S * q[x] + q[y] for a
    component x*y (S * q[x] + q[x] for one source x), q[s] the cluster of the symbol's context code under source s.
    `lookup` [2, components, P, K + 1] folds all of it but `row` into two gathers: slot 0 of component j holds
    j * P * S * S + codebook * S * S + S * q[x] for each context code of x, slot 1 holds q[y] (`_rows`); `slots`
    [2, components] names the source (index into SOURCES) each slot reads.
    """

    table: np.ndarray
    row: np.ndarray  # flat [components * P * S * S]: index in `table` of the row's step 0
    lookup: np.ndarray  # flat [2 * components * P * (K + 1)]
    slots: np.ndarray  # [2, components]
    slot_base: np.ndarray  # [2, components]: where slot k of component j starts in `lookup`
    power: np.ndarray  # float32: power[-d] is the frequency of a symbol d log units below the likeliest
    K1: int  # context codes: K and one for none
    S: int
    B: int
    H: int


def _ilog2(v: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """log2(v) in units of 2**-LOG_BITS bits for integers 1 <= v < 2**62, with integer operations and the table
    `lut` (lut[i] = log2(1 + i / 4096) in those units): the same on every machine."""
    v = np.asarray(v, dtype=np.int64)
    e = np.frexp(v.astype(np.float64))[1].astype(np.int64) - 1  # bit length - 1 (frexp is exact; rounding of v ...)
    e -= (v >> e) == 0  # ... up to the next power of two is undone here
    top = np.where(e >= 12, v >> np.maximum(e - 12, 0), v << np.maximum(12 - e, 0))  # 4096..8191
    return (e << LOG_BITS) + lut[top - 4096]


def log_rows(unigram: np.ndarray, extra: np.ndarray, indptr, codes, counts, owner: np.ndarray, lut, B: int):
    """Fixed-point logs of rows of smoothed counts: (block sums [rows, H], codes [rows, K]), `owner` the codebook of
    each row. Row r's frequency of code c is counts[r, c] * U + extra[r] * unigram[owner[r], c] (U: the unigram's
    sum), so the rows keep the smoothing of the fit exactly, in integers."""
    U = unigram.sum(1)
    v = unigram[owner] * np.asarray(extra, dtype=np.int64)[:, None]
    which = np.repeat(np.arange(len(owner)), np.diff(indptr))
    v[which, np.asarray(codes, dtype=np.int64)] += np.asarray(counts, dtype=np.int64) * U[owner[which]]
    K = v.shape[1]
    return _ilog2(v.reshape(-1, K // B, B).sum(2), lut), _ilog2(v, lut)


def _weighted(w: np.ndarray, logs: np.ndarray) -> np.ndarray:
    """w * logs / 2**WEIGHT_BITS rounded to log units (integers: the same everywhere); w broadcasts over logs."""
    return (w * logs + (1 << (WEIGHT_BITS - 1))) >> WEIGHT_BITS


def _coding(t: EntropyTables) -> _Coding:
    """Built once per tables with integer arithmetic only (`_ilog2`, integer weights): so the frequencies, and the
    coded bytes, are the same on every machine."""
    if t._dense is not None:
        return t._dense
    P, K, S = t.num_codebooks, t.codebook_size, t.clusters + 1
    a = t.arrays
    B = 1 << (K.bit_length() // 2)  # 2**ceil(log2(K) / 2) for K a power of two
    H = K // B
    lut = a["log2"].astype(np.int64)
    W = a["weights"].astype(np.int64)
    unigram = a["unigram"].astype(np.int64)
    u_hi, u_lo = log_rows(unigram, np.ones(P, np.int64), np.zeros(P + 1, np.int64), [], [], np.arange(P), lut, B)
    J, K1 = len(t.components), K + 1
    slots = np.array([[SOURCES.index(x) for x in (j.split("*") * 2)[:2]] for j in t.components]).T  # [2, J]
    tables, row = [], []
    lookup = np.zeros((2, J, P, K1), dtype=np.int64)
    offset = spread = 0
    for i, j in enumerate(t.components):
        R = a[f"{j}.extra"].shape[0] // P
        owner = np.repeat(np.arange(P), R)  # the codebook of each row
        hi, lo = log_rows(unigram, a[f"{j}.extra"], a[f"{j}.indptr"], a[f"{j}.codes"], a[f"{j}.counts"], owner, lut, B)
        d = np.zeros((P * R, H + 1, B), dtype=np.int64)
        d[:, 0, :H] = _weighted(W[owner, 1 + i, 0][:, None], hi)
        d[:, 1:, :] = _weighted(W[owner, 1 + i, 1][:, None], lo).reshape(-1, H, B)
        if i == 0:  # the histogram's expert
            d[:, 0, :H] += _weighted(W[owner, 0, 0][:, None], u_hi[owner])
            d[:, 1:, :] += _weighted(W[owner, 0, 1][:, None], u_lo[owner]).reshape(-1, H, B)
        d -= (d.max(2, keepdims=True) + d.min(2, keepdims=True)) >> 1  # a constant per step cancels: centre it
        spread += int(d.max() - d.min())
        tables.append(d)
        if "*" in j:
            cluster = a[f"{j}.map"].astype(np.int64).reshape(P, S * S)
        else:  # one source: the pair (q, q), whose row is the cluster q
            cluster = np.repeat(np.arange(S), S)[None, :].repeat(P, 0)  # the first source's cluster, any second
        row.append((offset + np.arange(P)[:, None] * R + cluster).reshape(-1) * (H + 1))
        offset += P * R
        first, second = (a[f"{SOURCES[s]}.map"].astype(np.int64).reshape(P, K1) for s in slots[:, i])
        lookup[0, i] = (i * P + np.arange(P)[:, None]) * S * S + S * first
        lookup[1, i] = second
    floor = EXP_TOP << LOG_BITS  # a symbol this far below the likeliest gets the floor frequency 1
    tables[0][:, 0, H:] = -(spread + floor)  # padding symbols of the high step (H < B): always at the floor
    power = np.ones(2 * spread + floor + 2, dtype=np.float32)
    power[:floor] = a["exp2"]
    power[1:] = power[1:][::-1].copy()  # power[-d]: d log units below the likeliest (power[0]: the likeliest)
    table = np.concatenate([d.reshape(-1, B) for d in tables])
    narrow = np.int16 if int(np.abs(table).max()) < 2**15 else np.int32  # the same sums; int16 gathers faster
    slot_base = (np.arange(2)[:, None] * J + np.arange(J)[None, :]) * P * K1
    t._dense = _Coding(
        table.astype(narrow), np.concatenate(row), lookup.ravel(), slots, slot_base, power, K1, S, B, H
    )  # fmt: skip
    return t._dense


def _probs(c: _Coding, rows: np.ndarray) -> np.ndarray:
    """The frequencies [n, B] (integers in float32, each step's sum below 2**23) of n steps whose rows in `c.table`
    are `rows` [components, n]: the power of two of the experts' summed weighted logs, from the likeliest symbol
    down, as integers from the stored table `exp2` (a symbol EXP_TOP bits or more below the likeliest gets 1)."""
    z = np.take(c.table, rows, axis=0).sum(0, dtype=np.int32)  # (np.take gathers rows faster than indexing)
    z -= z.max(1, keepdims=True)  # 0 for the likeliest symbol, -d for one d log units below it
    return np.take(c.power, z)


def _bases(c: _Coding, codebook: np.ndarray) -> np.ndarray:
    """Where in `c.lookup` [2, components, n] the context codes of n symbols of these codebooks are looked up."""
    return c.slot_base[:, :, None] + np.asarray(codebook) * c.K1


def _rows(c: _Coding, base: np.ndarray, ctx: np.ndarray) -> np.ndarray:
    """Rows [components, n] in `c.table` of n symbols: their `_bases` and the context codes [2, components, n]
    that each component's two slots read."""
    q = np.take(c.lookup, base + ctx)
    return np.take(c.row, q[0] + q[1])


def _family():
    import constriction

    return constriction.stream.model.Categorical(perfect=False)


def encode_packet(t: EntropyTables, codes: np.ndarray, levels: int) -> bytes:
    """codes [frames, C, levels * G] -> the packet's payload (a whole number of 32-bit words, little-endian).

    Per diagonal the payload holds the hi parts of its codes, then their lo parts (`_Coding`): the order in which a
    decoder can recover them."""
    import constriction

    F, C, _ = codes.shape
    G, K = t.num_groups, t.codebook_size
    at, contexts, codebook, starts, shape = _plan(F, C, levels, G)
    flat = _padded(codes, levels, G, K, shape).ravel()
    coding = _coding(t)
    code = flat[at]
    rows = _rows(coding, _bases(coding, codebook), flat[contexts[coding.slots]])
    n = len(at)
    diagonal = np.repeat(np.arange(len(starts) - 1), np.diff(starts))
    source = np.empty(2 * n, dtype=np.int64)  # the symbol of each position of the payload's sequence
    step = np.empty(2 * n, dtype=np.int64)  # its step in `coding.table`: 0 (hi), or 1 + hi (lo)
    symbols = np.empty(2 * n, dtype=np.int32)
    first, second = starts[diagonal] + np.arange(n), starts[diagonal + 1] + np.arange(n)
    source[first], source[second] = np.arange(n), np.arange(n)
    step[first], step[second] = 0, 1 + code // coding.B
    symbols[first], symbols[second] = code // coding.B, code % coding.B
    encoder = constriction.stream.queue.RangeEncoder()
    family = _family()
    for i in range(0, 2 * n, CHUNK_SYMBOLS):
        s = slice(i, i + CHUNK_SYMBOLS)
        encoder.encode(symbols[s], family, _probs(coding, np.take(rows, source[s], axis=1) + step[s]))
    return encoder.get_compressed().astype("<u4").tobytes()


@lru_cache(maxsize=8)  # a plan of 32 packets takes about 8 MiB and 3-6 ms to build (grvq16k's default packets)
def _lockstep_plan(frames: int, packets: int, channels: int, levels: int, groups: int, coding_key: tuple) -> tuple:
    """`_plan` of `packets` packets of `frames` frames decoded together: their codes sit in X [packets, C, frames + 2,
    levels + 2, G], and each diagonal's symbols are packet 0's (in `_plan`'s order), then packet 1's, and so on.
    Returns per symbol in that order [M] its flat index in X, and [M, 2, components] the flat indices in X of the
    context codes its components' slots read and their `_bases`; where each diagonal starts in M, how many symbols
    a packet has there, and X's shape. `coding_key`: the tables' `_Coding` (slots, slot_base, K1) as tuples."""
    slots, slot_base, K1 = np.array(coding_key[0]), np.array(coding_key[1]), coding_key[2]
    at, contexts, codebook, starts, one = _plan(frames, channels, levels, groups)
    N, n, size = packets, len(at), int(np.prod(one))
    per = np.diff(starts)  # a packet's symbols per diagonal
    diagonal = np.repeat(np.arange(len(per)), per)
    # symbol i (of diagonal d) of packet p goes to N * starts[d] + p * per[d] + (i - starts[d])
    where = (N - 1) * starts[diagonal] + np.arange(N)[:, None] * per[diagonal] + np.arange(n)
    order = np.empty(N * n, dtype=np.int64)
    order[where.ravel()] = np.arange(N * n)
    packet, i = np.divmod(order, n)
    ctx = contexts[slots][:, :, i].transpose(2, 0, 1) + (packet * size)[:, None, None]
    base = slot_base + (codebook[i] * K1)[:, None, None]
    return at[i] + packet * size, np.ascontiguousarray(ctx), base, (N * starts).tolist(), per.tolist(), (N, *one)


def decode_packets(
    t: EntropyTables, payloads: list[bytes], frames: list[int], channels: int, levels: int
) -> list[np.ndarray | ValueError]:
    """`decode_packet` of several packets: for each, its codes [frames, C, levels * G], or the ValueError that says
    why it does not decode (each packet is still coded on its own, so a damaged one loses only its own frames).

    The packets are decoded in lock-step, diagonal by diagonal: one set of numpy calls per diagonal for all of them
    (a diagonal's cost is in its numpy calls more than in its symbols), then each packet's own range decoder."""
    import constriction

    G, K = t.num_groups, t.codebook_size
    coding = _coding(t)
    key = (tuple(map(tuple, coding.slots.tolist())), tuple(map(tuple, coding.slot_base.tolist())), coding.K1)
    F, N, C, L = max(frames), len(payloads), channels, levels
    at, ctx, base, starts, per, shape = _lockstep_plan(F, N, C, L, G, key)
    errors: list[str | None] = [None] * N
    decoders: list = [None] * N
    for p, payload in enumerate(payloads):
        if len(payload) % 4:
            errors[p] = "the payload is not a whole number of 32-bit words"
        else:
            decoders[p] = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, "<u4").astype(np.uint32))
    # a packet of fewer frames than F decodes in a slot of F frames: at diagonal d it has the symbols of the levels
    # lv > d - its frames, the last of the slot's (`_plan` orders a diagonal's symbols by level); frames past its own
    # are nobody's context but their own and are not decoded (they are written as code 0)
    short = [(p, f) for p, f in enumerate(frames) if f < F]
    X = np.full(shape, K, dtype=np.int64)
    flat = X.ravel()
    family = _family()
    table, power, lookup, row, B, H = coding.table, coding.power, coding.lookup, coding.row, coding.B, coding.H
    steps = table[1:]
    bad = f"its entropy-coded payload does not decode (a code beyond the codebook's {K})"

    def decode(probs: np.ndarray, d: int, n: int) -> np.ndarray:  # each packet's symbols, by its own decoder
        if N == 1 and not short and decoders[0] is not None:
            return run(0, probs)
        out = np.zeros(len(probs), dtype=np.int32)  # a lost packet's: any code, so that the others go on
        skip = [0] * N
        for p, f in short:
            skip[p] = C * G * (max(0, d - f + 1) - max(0, d - F + 1)) if d < f + L - 1 else n
        for p in range(N):
            if decoders[p] is not None and skip[p] < n:
                out[p * n + skip[p] : (p + 1) * n] = run(p, probs[p * n + skip[p] : (p + 1) * n])
        return out

    def run(p: int, probs: np.ndarray) -> np.ndarray:
        try:
            return decoders[p].decode(family, probs)
        except (ValueError, RuntimeError, AssertionError) as e:  # constriction on invalid data
            errors[p], decoders[p] = f"its entropy-coded payload does not decode ({e})", None
            return np.zeros(len(probs), dtype=np.int32)

    for d, n in enumerate(per):  # its numpy calls (`_rows`, `_probs` inlined) are shared by all the packets
        s = slice(starts[d], starts[d + 1])
        q = lookup[base[s] + flat[ctx[s]]]
        rows = row[q[:, 0] + q[:, 1]].T  # [J, symbols]
        z = np.take(table, rows, axis=0).sum(0, dtype=np.int32)
        z -= z.max(1, keepdims=True)
        hi = decode(power[z], d, n)
        if H < B and hi.max() >= H:  # a padding symbol: only a forged payload decodes one
            for p in np.unique(np.nonzero(hi >= H)[0] // n).tolist():
                errors[p], decoders[p] = bad, None
                hi[p * n : (p + 1) * n] = 0
        z = np.take(steps, rows + hi, axis=0).sum(0, dtype=np.int32)  # step 1 + hi of each row
        z -= z.max(1, keepdims=True)
        flat[at[s]] = hi * B + decode(power[z], d, n)
    for p, decoder in enumerate(decoders):
        if decoder is not None and not decoder.maybe_exhausted():
            errors[p] = "its entropy-coded payload holds more data than its frames"
    return [
        ValueError(errors[p]) if errors[p] else X[p, :, 2 : f + 2, 2:, :].transpose(1, 0, 2, 3).reshape(f, C, L * G)
        for p, f in enumerate(frames)
    ]


def decode_packet(t: EntropyTables, payload: bytes, frames: int, channels: int, levels: int) -> np.ndarray:
    """Inverse of `encode_packet`: codes [frames, C, levels * G]; ValueError if the payload does not decode."""
    got = decode_packets(t, [payload], [frames], channels, levels)[0]
    if isinstance(got, ValueError):
        raise got
    return got
