"""The ensemble built a source and a chunk of rows at a time (memory-mapped sources and output) gives
the same bytes as the whole-matrix code it replaced (kept below, verbatim, as the reference)."""
import itertools

import numpy as np
import pytest
from sklearn.decomposition import PCA

from ubp.combine import blocks as B
from ubp.combine import ensemble as E
from ubp.combine import sources as S
from ubp.config import build
from ubp.io import UbpError
from ubp.models import features as features_model
from ubp.models.features import quantile_normal
from tests.combine.test_ensemble import context, ens, params_file, store


# --- the in-memory code as it was before the blockwise rewrite (the reference) ----------------------

def old_normalise(x, norm, seed=0, n_quantiles=1000, subsample=200_000):
    x = np.asarray(x, dtype=np.float32)
    if norm == "none":
        return x
    if norm == "l2":
        lengths = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(lengths > 0, lengths, np.float32(1.0))
    if norm == "quantile":
        x = quantile_normal(x, n_quantiles, subsample, seed)
    std = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.where(std > 0, std, np.float32(np.inf))


def old_reduce(x, dims, seed=0):
    k = min(int(dims), x.shape[0], x.shape[1])
    solver = "covariance_eigh" if x.shape[0] > x.shape[1] else "full"
    return PCA(n_components=k, svd_solver=solver, random_state=seed).fit_transform(x)


def old_block(x, present, src, method, balance, seed=0, n_quantiles=1000, subsample=200_000):
    x = old_normalise(x, B.resolve_norm(src.norm, method), seed, n_quantiles, subsample)
    if src.pca:
        x = old_reduce(x, src.pca, seed)
    if src.center:
        x = x - x.mean(axis=0)
    if balance in ("source", "dimension"):
        target = 1.0 if balance == "source" else float(x.shape[1])
        mean_square = float((x.astype(np.float64) ** 2).sum(axis=1).mean())
        x = x * np.float32(src.weight * np.sqrt(target / mean_square)) if mean_square > 0 else x
    else:
        x = x * np.float32(src.weight)
    out = np.empty((len(present), x.shape[1]), dtype=np.float32)
    out[:] = 0.0 if src.center else x.mean(axis=0)
    out[present] = x
    return out


def old_combine(parts, balance, **kw):
    return np.concatenate([old_block(x, present, src, method, balance, **kw) for x, present, src, method in parts],
                          axis=1).astype(np.float16)


# --- data --------------------------------------------------------------------------------------------

N = 41


def matrix(rng, d, dtype=np.float16):
    """Stored-profile-like values: mostly zeros, ties, a constant column, an all-zero row."""
    x = rng.standard_normal((N, d)) * rng.uniform(0.5, 20, d)
    x[rng.random((N, d)) < 0.5] = 0.0
    x[:, 0] = np.round(x[:, 0])
    x[:, -1] = 3.0
    x[5] = 0.0
    return x.astype(dtype)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 3 rows and 2 quantile columns, so every chunked loop runs many times."""
    monkeypatch.setattr(B, "CHUNK_BYTES", 3 * 4 * 20)
    monkeypatch.setattr(features_model, "QUANTILE_COLUMNS", 2)


SOURCES = [  # (source, method, width)
    (S.Source(name="tab", norm="quantile"), "features", 9),
    (S.Source(name="emb", weight=0.5), "gru_ae", 20),
    (S.Source(name="std", norm="standard", pca=4), "svd", 7),
    (S.Source(name="raw", norm="none", center=False, weight=2.0), "features", 5),
]


@pytest.mark.parametrize("balance, center", itertools.product(B.BALANCES, (True, False)))
def test_chunked_blocks_equal_the_whole_matrix_code_to_the_last_bit(small_chunks, balance, center):
    rng = np.random.default_rng(7)
    parts, loaded = [], []
    for src, method, d in SOURCES:
        src = S.Source(name=src.name, weight=src.weight, pca=src.pca, norm=src.norm, center=center and src.center)
        present = rng.random(N) < 0.8
        x = matrix(rng, d)[present]
        parts.append((x, present, src, method))
        loaded.append(S.Loaded(src, method, x, present, "stored"))
    kw = {"seed": 3, "n_quantiles": 10, "subsample": 30}  # subsample < rows: the quantiles' sampling too
    cfg = ens(balance=balance, **kw)
    for (x, present, src, method), item in zip(parts, loaded):  # float32, before the cast to float16
        assert np.array_equal(B.block(item, N, cfg), old_block(x, present, src, method, balance, **kw))
    expected = old_combine(parts, balance, **kw)
    got = B.combine(loaded, N, cfg)
    assert got.dtype == np.float16 and np.array_equal(got, expected)


def test_written_ensemble_equals_the_in_memory_one_and_the_old_code(small_chunks, tmp_path):
    """Stored sources (memory-mapped, rows in another order, a client missing) -> write() == build()."""
    ids = np.arange(100, 100 + N)
    ctx = context(tmp_path, ids)
    rng = np.random.default_rng(11)
    parts, per_source = [], {}
    for src, method, d in SOURCES:
        x = matrix(rng, d)
        keep = rng.permutation(N)[: N - 3]  # shuffled rows, three clients absent
        store(tmp_path / "emb", src.name, ids[keep], x[keep], ctx, method=method)
        present = np.isin(ids, ids[keep])
        order = np.argsort(ids[keep])
        parts.append((x[keep][order], present, src, method))
        per_source[src.name] = S.SourceSettings(weight=src.weight, pca=src.pca, norm=src.norm, center=src.center)
    cfg = ens(tmp_path, sources=tuple(per_source), per_source=per_source)
    in_memory = E.build(ctx, cfg)
    shape = E.write(ctx, cfg, tmp_path / "out.npy")
    written = np.load(tmp_path / "out.npy")
    assert shape == written.shape == in_memory.shape and written.dtype == np.float16
    assert np.array_equal(written, in_memory)
    assert np.array_equal(written, old_combine(parts, "source"))
    np.save(tmp_path / "saved.npy", in_memory)  # what the stage wrote before: the same file, header included
    assert (tmp_path / "out.npy").read_bytes() == (tmp_path / "saved.npy").read_bytes()


def test_a_source_outside_float16s_range_is_named(tmp_path):
    ctx = context(tmp_path, range(4))
    store(tmp_path / "emb", "big", range(4), np.full((4, 2), 60000.0), ctx)
    cfg = ens(tmp_path, sources=("big",), per_source={"big": S.SourceSettings(norm="none", center=False, weight=2.0)},
              balance="none")
    with pytest.raises(UbpError, match="source big has values beyond float16"):
        E.write(ctx, cfg, tmp_path / "out.npy")


def test_stored_sources_are_mapped_not_read_whole(tmp_path):
    ctx = context(tmp_path, range(6))
    store(tmp_path / "emb", "a", range(6), np.eye(6), ctx)
    loaded = E.load_all(ctx, ens(tmp_path, sources=("a",)))
    assert isinstance(loaded[0].x, np.memmap) and loaded[0].rows is not None


def test_the_method_writes_what_it_embeds_and_refuses_standardize(tmp_path):
    ctx = context(tmp_path, range(5))
    store(tmp_path / "emb", "a", range(5), np.arange(10.0).reshape(5, 2), ctx)
    cfg = {"sources": ["a"], "embeddings_dir": str(tmp_path / "emb"), "params_file": str(params_file(tmp_path))}
    assert E.write_embeddings(ctx, build(E.Config, cfg, "ensemble"), tmp_path / "a.npy") == (5, 2)
    assert np.array_equal(np.load(tmp_path / "a.npy"), E.embed(context(tmp_path, range(5)), build(E.Config, cfg, "e")))
    with pytest.raises(UbpError, match="unknown key 'ensemble.standardize'"):
        build(E.Config, {**cfg, "standardize": True}, "ensemble")
