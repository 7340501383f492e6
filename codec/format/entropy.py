"""Lossless entropy coding of codes: a context model fitted on training codes, and a range coder (constriction).

Each code is coded under a mixture of distributions over the K codes of its codebook (its group g and level l),
fitted by counting on a model's training codes:

    P(c) = w0 u(c) + sum over components j of w_j P(c | the code's context under j)

`u` is the codebook's smoothed histogram. A component conditions on one context code (a *source*: `prev`, the
previous frame's code at the same group and level; `coarse`, this frame's code one level coarser, same group;
`coarse2`, two levels coarser; `cross`, at level 0 the previous frame's code of the next group, deeper this frame's
coarser code of the next group) grouped into clusters, or on the pair of two sources' clusters (`prev*coarse`),
grouped again. Each component's counts are smoothed towards `u` (a Dirichlet prior of weight `BETA`), with the
rare pairs pruned (counted with `u`); the weights are fitted per codebook by EM on held-out codes (docs/ENTROPY.md
has what each context pays). Every context of a code sits one frame back at the same level or coarser in the same
frame, so a decoder recovers a packet diagonal by diagonal (frame + level = d), all groups, levels and channels of
a diagonal in two calls of the range decoder (`_Coding`: a code's high part, then its low part):

    level 2 |  2  3  4  5          the number is the diagonal: a code's contexts are on the ones before,
    level 1 |  1  2  3  4          so diagonal d decodes in one step once d - 1 is known
    level 0 |  0  1  2  3
            +------------ frame

**Determinism.** The tables hold integers only: the mixture's coefficients are rounded to fixed point when the
tables are fitted; each component's rows of frequencies are built from them with integer arithmetic, scaled by a
shift so that a code's rows sum below 2**23, and held as float32, which is exact for those integers. So the
frequencies are the same on every machine, and constriction turns them into its 24-bit fixed-point model with IEEE
arithmetic in a fixed order: an encoder and a decoder on different machines agree bit for bit
(`tests/test_entropy.py` pins the bytes of a coded packet).

**Packets** are coded independently (the previous-frame context starts afresh in each), so a damaged packet loses
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

FORMAT = "codec-entropy/2"
SUFFIX = ".entropy"
SOURCES = ("prev", "coarse", "cross", "coarse2")  # context codes of a code (`_plan` has where each sits)
# what `codec fit-entropy` fits: the sources alone, and the pairs that paid on dev (docs/ENTROPY.md)
COMPONENTS = ("prev", "coarse", "cross", "prev*coarse", "prev*cross", "coarse*cross", "coarse*coarse2")
BETA = 128.0  # weight of the smoothed histogram in each context's counts (Dirichlet prior)
MIN_WEIGHT = 0.02  # of the plain histogram in every mixture: no code is ever nearly impossible
SCALE = 2.0**36  # fixed point of the coefficients: a row's frequencies sum to about SCALE, exact in float64
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

    `unigram` [P, K]: smoothed code counts; `alpha0` [P]: fixed-point coefficient of the plain histogram; per
    context j: `map` [P * (K + 1)], the cluster (0..R-1) of each context code of each codebook (code K: no
    context), and over rows r = p * R + cluster: `indptr` [P * R + 1], `codes` and `counts` [nnz] (the kept
    pairs), `gamma` [P * R] (fixed-point weight of a kept count) and `alpha` [P * R] (fixed-point weight of the
    histogram that the context's smoothing and pruned counts add).
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
    ok = 2 <= K <= 2**16 and 1 <= t.clusters and P * Rs * Rs <= MAX_DENSE_ENTRIES  # pair lookups: [P, Rs, Rs]
    ok = ok and len(t.components) >= 1 and set(t.components) <= known
    ok = ok and a.get("unigram", np.empty(0)).shape == (P, K) and a.get("alpha0", np.empty(0)).shape == (P,)
    sources = {s for j in t.components for s in j.split("*")} if ok else set()
    for s in sources:
        m = a.get(f"{s}.map")
        ok = ok and m is not None and m.shape == (P * (K + 1),) and int(m.max()) < Rs
    entries = 0
    for j in t.components if ok else ():
        gamma = a.get(f"{j}.gamma")
        R = gamma.shape[0] // P if gamma is not None and gamma.ndim == 1 and P else 0
        rows = P * R
        entries += rows * K
        want = {f"{j}.indptr": (rows + 1,), f"{j}.gamma": (rows,), f"{j}.alpha": (rows,)}
        if "*" in j:
            want[f"{j}.map"] = (P * Rs * Rs,)
        ok = R >= 1 and all(k in a and a[k].shape == s for k, s in want.items())
        ok = ok and ("*" not in j or int(a[f"{j}.map"].max()) < R) and ("*" in j or R == Rs)
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

    The packet's codes sit in X [C, frames + 1, levels + 2, G] at [c, t + 1, lv + 2, g]; row 0 and columns 0-1 hold
    the no-context code K. Symbols go diagonal by diagonal (t + lv), then level, channel, group. Returns flat indices
    into X of each symbol and [len(SOURCES), n] of its context codes, its codebook (lv * G + g), where each diagonal
    starts, and X's shape.
    """
    C, F, L, G = channels, frames, levels, groups
    t, lv, c, g = np.meshgrid(np.arange(F), np.arange(L), np.arange(C), np.arange(G), indexing="ij")
    t, lv, c, g = (a.ravel() for a in (t, lv, c, g))
    order = np.lexsort((g, c, lv, t + lv))
    t, lv, c, g = t[order], lv[order], c[order], g[order]
    shape = (C, F + 1, L + 2, G)
    other = (g + 1) % G
    at = np.ravel_multi_index((c, t + 1, lv + 2, g), shape)
    prev = np.ravel_multi_index((c, t, lv + 2, g), shape)
    coarse = np.ravel_multi_index((c, t + 1, lv + 1, g), shape)
    coarse2 = np.ravel_multi_index((c, t + 1, lv, g), shape)
    if G > 1:  # level 0: the next group's previous frame; deeper: the next group's coarser code
        before = np.ravel_multi_index((c, t, lv + 2, other), shape)
        cross = np.where(lv == 0, before, np.ravel_multi_index((c, t + 1, lv + 1, other), shape))
    else:  # one group: the previous frame's coarser code (level 0: none)
        cross = np.ravel_multi_index((c, t, lv + 1, g), shape)
    contexts = np.stack([{"prev": prev, "coarse": coarse, "cross": cross, "coarse2": coarse2}[s] for s in SOURCES])
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
    X[:, 1:, 2:, :] = np.asarray(codes, dtype=np.int64).reshape(F1 - 1, C, levels, G).transpose(1, 0, 2, 3)
    return X


@dataclass
class _Coding:
    """What coding needs, built once per tables: every component's rows of frequencies, split for two-step coding.

    A code c is coded as hi = c // B then lo = c % B (B = 2**ceil(log2(K) / 2); K = H * B), each under its own
    distribution: P(hi) is the row's sum over each block of B codes, P(lo | hi) the row's block `hi`. So the range
    coder sees alphabets of B symbols (32 at K = 1024) instead of K, and a symbol's probabilities are gathered from
    2 * B frequencies instead of K. `table` [rows of all components * (H + 1), B]: per row, step 0 the block sums
    (padded with zeros to B; a zero costs only constriction's floor), step 1 + hi the block hi; `row` holds the
    index of a row's step 0. A symbol's row of component j is
    `row[j, (codebook * S + q[x_j]) * S + q[y_j]]`, where q are the clusters of its context codes (`source_map`:
    [sources, P * (K + 1)]), S the sources' clusters + 1, and x_j, y_j the sources of j (y_j = x_j for one source).
    """

    table: np.ndarray
    row: np.ndarray  # flat: component j's rows (their step 0 in `table`) from row_offset[j]
    row_offset: np.ndarray  # [components, 1]
    source_map: np.ndarray  # flat: source i's clusters from source_offset[i]
    source_offset: np.ndarray  # [sources, 1]
    x: np.ndarray  # [components]: the first source of each component
    y: np.ndarray  # the second (the first again for a component of one source)
    K1: int  # context codes: K and one for none
    S: int
    B: int
    H: int


def _coding(t: EntropyTables) -> _Coding:
    """Built once per tables with integer arithmetic only: row r of component j holds gamma * counts + alpha *
    unigram (the plain histogram's alpha0 * unigram goes into the first component's rows), then every value is shifted
    right by the same number of bits so that the rows a code sums stay below 2**23, where float32 holds integers
    exactly: the sums, and so the coded bytes, are the same on every machine."""
    if t._dense is not None:
        return t._dense
    P, K, S = t.num_codebooks, t.codebook_size, t.clusters + 1
    a = t.arrays
    B = 1 << (K.bit_length() // 2)  # 2**ceil(log2(K) / 2) for K a power of two
    H = K // B
    dense, row, x, y = [], [], [], []
    offset = 0
    for i, j in enumerate(t.components):
        R = a[f"{j}.gamma"].shape[0] // P
        owner = np.repeat(np.arange(P), R)  # the codebook of each row
        d = a["unigram"][owner] * a[f"{j}.alpha"][:, None]
        if i == 0:
            d += a["unigram"][owner] * a["alpha0"][owner][:, None]
        indptr = a[f"{j}.indptr"]
        which = np.repeat(np.arange(P * R), np.diff(indptr))
        d[which, a[f"{j}.codes"].astype(np.int64)] += a[f"{j}.gamma"][which] * a[f"{j}.counts"]
        dense.append(d)
        parts = j.split("*")
        x.append(SOURCES.index(parts[0]))
        y.append(SOURCES.index(parts[-1]))
        if len(parts) == 2:
            cluster = a[f"{j}.map"].astype(np.int64).reshape(P, S * S)
        else:
            cluster = np.repeat(np.arange(S), S)[None, :].repeat(P, 0)  # the first source's cluster, any second
        row.append((offset + np.arange(P)[:, None] * R + cluster).reshape(-1) * (H + 1))
        offset += P * R
    top = sum(int(d.max()) for d in dense)
    shift = max(0, top.bit_length() - 23)
    rows = np.concatenate(dense) >> shift
    table = np.zeros((len(rows), H + 1, B), dtype=np.float32)
    table[:, 1:, :] = rows.reshape(-1, H, B)
    table[:, 0, :H] = rows.reshape(-1, H, B).sum(2)  # integer sums below 2**23: exact in float32
    table = table.reshape(-1, B)
    source_map = np.zeros((len(SOURCES), P * (K + 1)), dtype=np.int64)
    for i, s in enumerate(SOURCES):
        if f"{s}.map" in a:
            source_map[i] = a[f"{s}.map"]
    n, m = len(row), len(row[0])
    t._dense = _Coding(
        table, np.concatenate(row), np.arange(n)[:, None] * m, source_map.ravel(),
        np.arange(len(SOURCES))[:, None] * P * (K + 1), np.array(x), np.array(y), K + 1, S, B, H,
    )  # fmt: skip
    return t._dense


def _row_index(c: _Coding, codebook: np.ndarray, ctx: np.ndarray) -> np.ndarray:
    """Rows [components, n] in `c.table` of n symbols: their codebooks, their context codes [sources, n]."""
    return _rows_at(c, *_bases(c, codebook), ctx)


def _bases(c: _Coding, codebook: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """What `_rows_at` needs of the symbols' codebooks (a decoder takes it once per packet, not per diagonal)."""
    return c.source_offset + codebook * c.K1, c.row_offset + codebook * (c.S * c.S)


def _rows_at(c: _Coding, source_base: np.ndarray, row_base: np.ndarray, ctx: np.ndarray) -> np.ndarray:
    q = c.source_map[source_base + ctx]
    return c.row[row_base + q[c.x] * c.S + q[c.y]]


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
    rows = _row_index(coding, codebook, flat[contexts])
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
        probs = coding.table[rows[:, source[s]] + step[s]].sum(0)
        encoder.encode(symbols[s], family, probs)
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
    try:
        for d in range(len(starts) - 1):
            s = slice(starts[d], starts[d + 1])
            rows = _rows_at(coding, source_base[:, s], row_base[:, s], flat[contexts[:, s]])
            hi = decoder.decode(family, coding.table[rows].sum(0))
            if hi.size and hi.max() >= coding.H:  # a padding symbol: only a forged payload decodes one
                raise ValueError(f"a code beyond the codebook's {K}")
            lo = decoder.decode(family, coding.table[rows + 1 + hi].sum(0))
            flat[at[s]] = hi * coding.B + lo
    except (ValueError, RuntimeError, AssertionError) as e:  # constriction on invalid data
        raise ValueError(f"its entropy-coded payload does not decode ({e})") from None
    if not decoder.maybe_exhausted():
        raise ValueError("its entropy-coded payload holds more data than its frames")
    return X[:, 1:, 2:, :].transpose(1, 0, 2, 3).reshape(frames, channels, levels * G)
