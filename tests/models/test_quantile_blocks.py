"""quantile_normal and tabular_input work a block of columns at a time (bounded float64 copies at 1M
clients): the result must be the one a single pass over all columns gives, to the bit."""
import numpy as np
import pytest
from sklearn.preprocessing import QuantileTransformer

from ubp.models import _training as T
from ubp.models import features as F


def counts_like(seed: int, n: int, d: int) -> np.ndarray:
    """Mostly-zero heavy-tailed counts with ties, a constant column and a continuous one."""
    rng = np.random.default_rng(seed)
    x = (rng.pareto(1.5, (n, d)) * (rng.random((n, d)) < 0.3)).round(1).astype(np.float32)
    x[:, 0] = 0.0
    x[:, -1] = rng.standard_normal(n)
    return x


def one_pass(x, n_quantiles, subsample, seed):
    qt = QuantileTransformer(n_quantiles=max(1, min(n_quantiles, len(x))), output_distribution="normal",
                             subsample=subsample, random_state=seed, copy=True)
    return qt.fit_transform(x.astype(np.float64)).astype(np.float32)


@pytest.mark.parametrize("n,d,subsample,block", [(500, 37, 200_000, 16), (900, 23, 300, 5), (300, 7, 100, 1)])
def test_blocks_of_columns_equal_one_pass(monkeypatch, n, d, subsample, block):
    monkeypatch.setattr(F, "QUANTILE_COLUMNS", block)
    x = counts_like(n + d, n, d)
    want = one_pass(x, 100, subsample, 3)
    assert np.array_equal(F.quantile_normal(x, 100, subsample, 3), want)
    inplace = x.copy()
    assert F.quantile_normal(inplace, 100, subsample, 3, out=inplace) is inplace
    assert np.array_equal(inplace, want)


def test_tabular_input_equals_whole_matrix_standardisation(monkeypatch):
    x = counts_like(5, 700, 29)
    q = one_pass(x, 200, 250, 0).astype(np.float64)
    std = q.std(axis=0)
    want = ((q - q.mean(axis=0)) / np.where(std > 1e-6, std, 1.0)).astype(np.float32)
    monkeypatch.setattr("ubp.features.table.load_or_build", lambda ctx: None)
    frozen = x.copy()
    frozen.flags.writeable = False  # what pandas' copy-on-write hands out
    monkeypatch.setattr("ubp.features.table.feature_matrix", lambda table: frozen)
    monkeypatch.setattr(F, "QUANTILE_COLUMNS", 4)
    got = T.tabular_input(None, T.TabularConfig(n_quantiles=200, subsample=250, seed=0))
    assert got.dtype == np.float32 and np.array_equal(got, want)
    assert np.all(got[:, 0] == 0)  # a constant column is centred, not divided by ~0
