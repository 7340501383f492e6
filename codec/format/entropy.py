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

**Packets** are coded independently (the previous-frame contexts start afresh in each), so a damaged packet loses
only its own frames. The tables live in a file beside the model (`<model>.entropy`, a safetensors file of
integer arrays with the model id, the components and the format in its metadata), written by `codec fit-entropy`.
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
    weighted logs are added to the first component's rows); `row` holds the index of a row's step 0. A symbol's
    row of component j is `row[j, codebook * S * S + pair_j]` with `pair_j = mix[j] @ q`: q [used sources, n] are
    the clusters of its context codes (`source_map`), S the sources' clusters + 1, and pair_j = q[x] * S + q[y] for
    a component x*y (q[x] * (S + 1) for one source x).
    """

    table: np.ndarray
    row: np.ndarray  # flat: component j's rows (their step 0 in `table`) from row_offset[j]
    row_offset: np.ndarray  # [components, 1]
    used: np.ndarray  # the sources (indices into SOURCES) that some component reads
    source_map: np.ndarray  # flat: used source i's clusters from source_offset[i]
    source_offset: np.ndarray  # [used sources, 1]
    mix: np.ndarray  # [components, used sources]: S and 1 (or S + 1) where each component reads its sources
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
    used = sorted({SOURCES.index(x) for j in t.components for x in j.split("*")})
    tables, row, mix = [], [], np.zeros((len(t.components), len(used)), dtype=np.int64)
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
        parts = [used.index(SOURCES.index(x)) for x in j.split("*")]
        if len(parts) == 2:
            mix[i, parts[0]], mix[i, parts[1]] = S, 1
            cluster = a[f"{j}.map"].astype(np.int64).reshape(P, S * S)
        else:  # one source: pair_j = q * (S + 1) is the pair (q, q)
            mix[i, parts[0]] = S + 1
            cluster = np.repeat(np.arange(S), S)[None, :].repeat(P, 0)  # the first source's cluster, any second
        row.append((offset + np.arange(P)[:, None] * R + cluster).reshape(-1) * (H + 1))
        offset += P * R
    floor = EXP_TOP << LOG_BITS  # a symbol this far below the likeliest gets the floor frequency 1
    tables[0][:, 0, H:] = -(spread + floor)  # padding symbols of the high step (H < B): always at the floor
    power = np.ones(2 * spread + floor + 2, dtype=np.float32)
    power[:floor] = a["exp2"]
    power[1:] = power[1:][::-1].copy()  # power[-d]: d log units below the likeliest (power[0]: the likeliest)
    source_map = np.zeros((len(used), P * (K + 1)), dtype=np.int64)
    for i, s in enumerate(used):
        source_map[i] = a[f"{SOURCES[s]}.map"]
    n, m = len(row), len(row[0])
    table = np.concatenate([d.reshape(-1, B) for d in tables])
    narrow = np.int16 if int(np.abs(table).max()) < 2**15 else np.int32  # the same sums; int16 gathers faster
    t._dense = _Coding(
        table.astype(narrow), np.concatenate(row),
        np.arange(n)[:, None] * m, np.array(used), source_map.ravel(), np.arange(len(used))[:, None] * P * (K + 1),
        mix, power, K + 1, S, B, H,
    )  # fmt: skip
    return t._dense


def _probs(c: _Coding, rows: np.ndarray) -> np.ndarray:
    """The frequencies [n, B] (integers in float32, each step's sum below 2**23) of n steps whose rows in `c.table`
    are `rows` [components, n]: the power of two of the experts' summed weighted logs, from the likeliest symbol
    down, as integers from the stored table `exp2` (a symbol EXP_TOP bits or more below the likeliest gets 1)."""
    z = np.take(c.table, rows, axis=0).sum(0, dtype=np.int32)  # (np.take gathers rows faster than indexing)
    z -= z.max(1, keepdims=True)  # 0 for the likeliest symbol, -d for one d log units below it
    return np.take(c.power, z)


def _bases(c: _Coding, codebook: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What `_rows_at` needs of the symbols' codebooks (a decoder takes it once per packet, not per diagonal)."""
    return c.source_offset + codebook * c.K1, c.row_offset + codebook * (c.S * c.S)


def _rows_at(c: _Coding, source_base: np.ndarray, row_base: np.ndarray, ctx: np.ndarray) -> np.ndarray:
    """Rows [components, n] in `c.table` of n symbols: their `_bases`, their used sources' context codes."""
    return np.take(c.row, row_base + c.mix @ np.take(c.source_map, source_base + ctx))


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
    rows = _rows_at(coding, *_bases(coding, codebook), flat[contexts[coding.used]])
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


def decode_packet(t: EntropyTables, payload: bytes, frames: int, channels: int, levels: int) -> np.ndarray:
    """Inverse of `encode_packet`: codes [frames, C, levels * G]; ValueError if the payload does not decode."""
    import constriction

    G, K = t.num_groups, t.codebook_size
    if len(payload) % 4:
        raise ValueError("the payload is not a whole number of 32-bit words")
    at, contexts, codebook, starts, shape = _plan(frames, channels, levels, G)
    X = np.full(shape, K, dtype=np.int64)
    flat = X.ravel()
    coding = _coding(t)
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    family = _family()
    source_base, row_base = _bases(coding, codebook)
    contexts = contexts[coding.used]
    padded = coding.H < coding.B  # a high part can decode to a padding symbol only then
    table, power, source_map, row, mix, B = (
        coding.table,
        coding.power,
        coding.source_map,
        coding.row,
        coding.mix,
        coding.B,
    )
    decode, steps = decoder.decode, table[1:]
    try:  # `_rows_at` and `_probs` inlined, with indexing (np.take costs more on a diagonal's few symbols):
        for d in range(len(starts) - 1):  # this loop's cost is per numpy call, not per symbol
            s = slice(starts[d], starts[d + 1])
            rows = row[row_base[:, s] + mix @ source_map[source_base[:, s] + flat[contexts[:, s]]]]
            z = table[rows].sum(0, dtype=np.int32)
            z -= z.max(1, keepdims=True)
            hi = decode(family, power[z])
            if padded and hi.size and hi.max() >= coding.H:  # a padding symbol: only a forged payload decodes one
                raise ValueError(f"a code beyond the codebook's {K}")
            z = steps[rows + hi].sum(0, dtype=np.int32)  # step 1 + hi of each row
            z -= z.max(1, keepdims=True)
            flat[at[s]] = hi * B + decode(family, power[z])
    except (ValueError, RuntimeError, AssertionError) as e:  # constriction on invalid data
        raise ValueError(f"its entropy-coded payload does not decode ({e})") from None
    if not decoder.maybe_exhausted():
        raise ValueError("its entropy-coded payload holds more data than its frames")
    return X[:, 2:, 2:, :].transpose(1, 0, 2, 3).reshape(frames, channels, levels * G)
