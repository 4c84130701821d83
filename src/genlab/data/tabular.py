"""Small real tables bundled with scikit-learn (no download): the usual real case of hundreds of
rows and tens of columns, for density models of tabular data (``configs/*-tabular.yaml``).

Rows are points ``(N, d)`` in float32, in their original units (no standardization: a flow's
first ActNorm layer scales the columns, and likelihoods stay in the units of the data); the
split is random and seeded like any array's. Labels are dropped: the task is the density of the
features.
"""

from __future__ import annotations

import torch

from genlab.data.base import Dataset, from_examples
from genlab.registry import DATASETS


def _table(
    name: str, loader: str, n: int | None, val_fraction: float, test_fraction: float, seed: int
) -> Dataset:
    import sklearn.datasets

    x = torch.as_tensor(getattr(sklearn.datasets, loader)().data, dtype=torch.float32)
    meta = {"source": f"sklearn.datasets.{loader}"}
    return from_examples(
        name,
        "points",
        x,
        n=n,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        labels=None,
        meta=meta,
    )


@DATASETS.register("wine", help="scikit-learn wine table: 178 rows x 13 chemical measurements")
def load_wine(
    *, n: int | None = None, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> Dataset:
    """UCI wine recognition data (Forina et al.): 178 wines, 13 measurements each."""
    return _table("wine", "load_wine", n, val_fraction, test_fraction, seed)


@DATASETS.register("diabetes", help="scikit-learn diabetes table: 442 rows x 10 (scaled) features")
def load_diabetes(
    *, n: int | None = None, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> Dataset:
    """Efron et al. (2004) diabetes data: 442 patients, 10 baseline variables (mean-centred and
    scaled by scikit-learn; the sex column takes two values)."""
    return _table("diabetes", "load_diabetes", n, val_fraction, test_fraction, seed)


@DATASETS.register("breast-cancer", help="scikit-learn breast-cancer table: 569 rows x 30 features")
def load_breast_cancer(
    *, n: int | None = None, val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0
) -> Dataset:
    """Wisconsin diagnostic breast cancer data: 569 tumours, 30 features of cell nuclei."""
    return _table("breast-cancer", "load_breast_cancer", n, val_fraction, test_fraction, seed)
