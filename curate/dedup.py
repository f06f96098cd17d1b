"""Exact and near-duplicate trajectories of the same question (model-written text only).

Observations are left out: two samples that issue the same query get the same results, and that is
not what makes them duplicates. Near duplicates use MinHash over word shingles: signatures are built
with numpy over all rows of a batch at once (one flat array of shingle hashes, ``minimum.reduceat``
per permutation), candidate pairs come from LSH bands joined within a question, and a candidate is a
near duplicate when its estimated Jaccard similarity reaches the threshold. Within a group the row
that sorts first (correct before wrong, then by sample and id) is kept.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl

_MAX = np.iinfo(np.uint64).max
_MIX = (
    np.uint64(0x9E3779B97F4A7C15),
    np.uint64(0xC2B2AE3D27D4EB4F),
    np.uint64(0x165667B19E3779F9),
    np.uint64(0xD6E8FEB86659FD93),
    np.uint64(0xFF51AFD7ED558CCD),
)


def _params(perms: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**63, perms, dtype=np.uint64) | np.uint64(1)  # odd: a bijection mod 2**64
    return a, rng.integers(0, 2**63, perms, dtype=np.uint64)


def minhash(words: pl.Series, perms: int = 16, shingle: int = 3, seed: int = 0) -> np.ndarray:
    """(rows, perms) uint64 MinHash signatures of word ``shingle``-grams, from lists of words.

    A text shorter than one shingle is hashed whole (it can only match itself exactly)."""
    if not 1 <= shingle <= len(_MIX):
        raise ValueError(f"shingle must be in 1..{len(_MIX)}, got {shingle}")
    hashes = words.list.eval(pl.element().hash(seed))
    lens = hashes.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = hashes.explode().drop_nulls().to_numpy()
    n, total = len(lens), len(flat)
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lens, out=starts[1:])
    # shingle i combines words i..i+shingle-1; keep only those inside one row (compacted once, so each
    # permutation is a multiply, an add and a per-row minimum over a dense array)
    m = max(total - shingle + 1, 0)
    per_row = np.maximum(lens - shingle + 1, 0)
    if m:
        acc = flat[:m] * _MIX[0]
        for j in range(1, shingle):
            acc ^= flat[j : j + m] * _MIX[j]
        keep = np.repeat(starts[:-1], per_row) + (
            np.arange(per_row.sum()) - np.repeat(np.cumsum(per_row) - per_row, per_row)
        )
        sh = acc[keep]
    else:
        sh = np.zeros(0, dtype=np.uint64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(per_row, out=offsets[1:])
    a, b = _params(perms, seed)
    sig = np.empty((n, perms), dtype=np.uint64)
    short = per_row == 0

    def one(j: int) -> None:
        v = np.empty(len(sh) + 1, dtype=np.uint64)  # a sentinel at the end keeps every row start a valid index
        np.multiply(sh, a[j], out=v[:-1])
        v[:-1] += b[j]
        v[-1] = _MAX
        sig[:, j] = np.minimum.reduceat(v, offsets[:-1])

    with ThreadPoolExecutor(2) as pool:  # numpy releases the GIL: permutations run side by side
        list(pool.map(one, range(perms)))
    if short.any():
        whole = words.filter(pl.Series(short)).fill_null([]).list.join(" ").hash(seed).to_numpy()
        sig[short] = whole[:, None] * a[None, :] + b[None, :]
    return sig


def near_duplicates(groups: pl.Series, sig: np.ndarray, bands: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """For rows in keep-order, whether each is a near duplicate of an earlier row of its group, and of which.

    ``groups``: one group key per row (the question); returns (flag, index of the earlier row or -1)."""
    n, perms = sig.shape
    if perms % bands:
        raise ValueError(f"minhash_perms ({perms}) must be a multiple of lsh_bands ({bands})")
    rows = perms // bands
    flag, of = np.zeros(n, dtype=bool), np.full(n, -1, dtype=np.int64)
    if n < 2:
        return flag, of
    band_keys = [
        pl.DataFrame({f"c{k}": sig[:, i * rows + k] for k in range(rows)}).hash_rows(seed=i) for i in range(bands)
    ]
    table = pl.DataFrame({"i": np.arange(n), "g": groups}).with_columns(
        pl.concat_list([pl.Series(f"b{i}", band_keys[i]) for i in range(bands)]).alias("key"),
        pl.int_range(bands).implode().alias("band"),
    )
    table = table.explode("key", "band").with_columns(k=pl.struct("g", "band", "key").hash())
    table = table.filter(pl.col("k").is_duplicated())  # most band keys are unique: no self-join for them
    pairs = (
        table.join(table, on=["k", "g"], suffix="_o").filter(pl.col("i_o") < pl.col("i")).select("i", "i_o").unique()
    )
    if pairs.height == 0:
        return flag, of
    i, o = pairs["i"].to_numpy(), pairs["i_o"].to_numpy()
    sim = (sig[i] == sig[o]).mean(axis=1)
    hit = pl.DataFrame({"i": i[sim >= threshold], "o": o[sim >= threshold]}).group_by("i").agg(pl.col("o").min())
    flag[hit["i"].to_numpy()] = True
    of[hit["i"].to_numpy()] = hit["o"].to_numpy()
    return flag, of
