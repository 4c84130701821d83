"""genlab.data: toy laws (densities, samplers), array/image/text loaders and their error messages.

Numerics run in float64 (the laws sample and evaluate in float64 whatever the default dtype).
"""

from __future__ import annotations

import gzip
import math
from functools import cache

import numpy as np
import pytest
import torch

from genlab.data import TOY, decode, encode, load, split
from genlab.data.base import asset
from genlab.data.images import read_idx
from genlab.data.text import SHAKESPEARE
from genlab.data.toy import Circles, Pinwheel, _NoisyCurves
from genlab.errors import DataError, UnknownNameError

WITH_DENSITY = sorted(name for name, cls in TOY.items() if cls().has_log_prob)


@cache
def density_on_grid(name: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Cell centres of a grid covering the law's support, density there and the cell side."""
    # h <= std of the narrowest part (half of it for the mixtures), half-width covering the support
    narrow = {"25gaussians": (0.025, 3.0), "grid": (0.025, 4.5), "ring": (0.005, 1.1)}
    h, half = narrow.get(name, (0.1, 5.0))
    c = torch.arange(-half + h / 2, half, h, dtype=torch.float64)
    grid = torch.cartesian_prod(c, c)
    return grid, TOY[name]().log_prob(grid).exp(), h


# --- toy laws -------------------------------------------------------------------------------


def test_every_toy_law_has_a_density():
    assert sorted(TOY) == WITH_DENSITY  # every toy set has a density (exact or quadrature)


@pytest.mark.parametrize("name", WITH_DENSITY)
def test_density_integrates_to_one(name):
    _, p, h = density_on_grid(name)
    assert p.sum().item() * h * h == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("name", WITH_DENSITY)
def test_density_matches_histogram_of_samples(name):
    grid, p, h = density_on_grid(name)
    x = TOY[name]().sample(100_000, torch.Generator().manual_seed(1))
    # Coarse 0.5-wide bins (aligned with the checkerboard squares): predicted vs observed mass.
    edges = 0.5 * torch.floor(grid / 0.5)
    keys, inv = torch.unique(edges, dim=0, return_inverse=True)
    predicted = torch.zeros(len(keys), dtype=torch.float64).index_add(0, inv, p * h * h)
    xb = 0.5 * torch.floor(x / 0.5)
    observed = torch.zeros(len(keys), dtype=torch.float64)
    match = (xb[:, None, :] == keys[None]).all(-1)  # (n, bins)
    observed += match.sum(0) / len(x)
    # Binomial std of a bin share is <= sqrt(0.25 / 1e5) = 1.6e-3.
    assert (predicted - observed).abs().max().item() < 0.006


@pytest.mark.parametrize("name", sorted(TOY))
def test_sampler_is_reproducible_with_a_seeded_generator(name):
    law = TOY[name]()
    a = law.sample(1000, torch.Generator().manual_seed(7))
    b = law.sample(1000, torch.Generator().manual_seed(7))
    c = law.sample(1000, torch.Generator().manual_seed(8))
    assert a.dtype == torch.float64 and a.shape == (1000, 2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.abs().max() < 5.0  # every toy set lives roughly in [-4, 4]^2


def test_moons_mean_nll_matches_published_value():
    law = TOY["moons"]()
    x = law.sample(200_000, torch.Generator().manual_seed(0))
    assert -law.log_prob(x).mean().item() == pytest.approx(1.679, abs=0.01)


def test_moons_nll_of_samples_estimates_the_entropy_by_grid():
    grid, p, h = density_on_grid("moons")
    entropy = -(p * p.log().clamp_min(-1e3)).sum().item() * h * h
    x = TOY["moons"]().sample(50_000, torch.Generator().manual_seed(3))
    nll = -TOY["moons"]().log_prob(x)
    assert nll.mean().item() == pytest.approx(entropy, abs=4 * nll.std().item() / math.sqrt(len(x)))


def test_moons_arc_positions_are_iid_not_evenly_spaced():
    law = TOY["moons"](noise=0.0)
    x = law.sample(2000, torch.Generator().manual_seed(0))
    centre = torch.tensor([-1.0, -0.5], dtype=torch.float64)  # of the outer arc, radius 2
    outer = x[((x - centre).norm(dim=1) - 2).abs() < 1e-9]
    theta = torch.atan2(outer[:, 1] - centre[1], outer[:, 0] - centre[0]).sort().values
    gaps = theta.diff()
    assert gaps.std() > 0.5 * gaps.mean()  # exponential-like spacings, not a linspace
    assert 0.45 < len(outer) / len(x) < 0.55  # moon ~ Bernoulli(1/2)
    # the noise-free points lie on the two radius-2 arcs
    on_arc = torch.minimum(
        ((x - centre).norm(dim=1) - 2).abs(), ((x + centre).norm(dim=1) - 2).abs()
    )
    assert on_arc.max() < 1e-9


@pytest.mark.parametrize("name", ["moons", "swissroll", "spirals"])
def test_quadrature_is_converged(name):
    law = TOY[name]()
    x = law.sample(300, torch.Generator().manual_seed(2))
    assert law.log_prob_kind == "quadrature"
    err = (law.log_prob(x) - law.log_prob(x, panels=2 * law.panels)).abs().max()
    assert err < 1e-6


def test_circles_bessel_density_equals_quadrature_along_the_rings():
    law = Circles()
    x = torch.cat(
        [law.sample(500, torch.Generator().manual_seed(0)), torch.randn(100, 2).double() * 2]
    )
    assert torch.allclose(law.log_prob(x), _NoisyCurves.log_prob(law, x), atol=1e-8, rtol=0)


def test_pinwheel_density_is_normalized_when_rate_is_zero_and_matches_gaussian_arms():
    # With rate 0 the warp is a fixed rotation per arm: the density is a Gaussian mixture.
    law = Pinwheel(rate=0.0)
    x = law.sample(500, torch.Generator().manual_seed(0))
    angles = 2 * math.pi * torch.arange(5, dtype=torch.float64) / 5
    c, s = torch.cos(angles), torch.sin(angles)
    f0 = (c * x[:, :1] - s * x[:, 1:]) / 2  # undo x = 2 R(-a) f
    f1 = (s * x[:, :1] + c * x[:, 1:]) / 2
    logn = -0.5 * ((f0 - 1) / 0.3) ** 2 - 0.5 * (f1 / 0.1) ** 2 - math.log(2 * math.pi * 0.03 * 4)
    expected = torch.logsumexp(logn, 1) - math.log(5)
    assert torch.allclose(law.log_prob(x), expected, atol=1e-9)


def test_checkerboard_density_is_zero_off_the_black_squares():
    law = TOY["checkerboard"]()
    pts = torch.tensor([[0.5, 0.5], [2.5, 0.5], [-3.0, -3.0], [4.5, 0.0]], dtype=torch.float64)
    assert law.log_prob(pts).tolist() == [-math.log(32), -math.inf, -math.log(32), -math.inf]


def test_toy_dataset_is_float32_split_and_carries_its_law():
    ds = load("moons", n=1000, val_fraction=0.1, seed=0)
    assert ds.kind == "points" and ds.train.dtype == torch.float32
    assert (len(ds.train), len(ds.val)) == (900, 100)
    assert isinstance(ds.true, TOY["moons"]) and ds.true.log_prob_kind == "quadrature"
    again = load("moons", n=1000, val_fraction=0.1, seed=0)
    assert torch.equal(ds.train, again.train) and torch.equal(ds.val, again.val)
    assert load("moons", n=1000, noise=0.2).true.noise == 0.2


# --- split and name lookup ----------------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_covers_every_index():
    tr, va, te = split(1000, 0.2, seed=3, test_fraction=0.1)
    tr2, va2, te2 = split(1000, 0.2, seed=3, test_fraction=0.1)
    assert torch.equal(tr, tr2) and torch.equal(va, va2) and torch.equal(te, te2)
    assert (len(tr), len(va), len(te)) == (700, 200, 100)
    assert sorted(torch.cat([tr, va, te]).tolist()) == list(range(1000))
    assert not torch.equal(split(1000, 0.2, seed=4, test_fraction=0.1)[2], te)


def test_test_rows_do_not_depend_on_the_validation_fraction():
    """Tuning data.val_fraction never moves a test row into training or validation; without a
    test part the validation rows are those of the two-way split."""
    te = split(1000, 0.2, seed=3, test_fraction=0.1)[2]
    for v in (0.0, 0.05, 0.3):
        assert torch.equal(split(1000, v, seed=3, test_fraction=0.1)[2], te)
    tr, va, te0 = split(1000, 0.2, seed=3)
    assert len(te0) == 0 and torch.equal(va, split(1000, 0.2, seed=3, test_fraction=0.1)[1])


@pytest.mark.parametrize("val,test", [(0.5, 0.5), (0.9, 0.2), (-0.1, 0.1), (0.1, 1.0)])
def test_fractions_that_leave_nothing_to_train_on_are_refused(val, test):
    with pytest.raises(DataError, match="fraction"):
        split(100, val, seed=0, test_fraction=test)


def test_unknown_name_suggests_close_name():
    with pytest.raises(UnknownNameError, match="did you mean 'moons'"):
        load("mons")


def test_unknown_option_is_named():
    with pytest.raises(DataError, match="unknown option 'nosie'.*accepts noise"):
        load("moons", nosie=0.1)
    with pytest.raises(DataError, match="unknown option 'size'"):
        load("digits", size=4)


def test_name_and_path_are_exclusive():
    with pytest.raises(DataError, match="exactly one"):
        load()
    with pytest.raises(DataError, match="exactly one"):
        load("moons", path="x.npy")


# --- arrays ---------------------------------------------------------------------------------------


@pytest.fixture
def points5(tmp_path):
    return np.random.default_rng(0).normal(size=(40, 5))


def test_npy_npz_csv_load_a_5d_array_identically(tmp_path, points5):
    np.save(tmp_path / "p.npy", points5)
    np.savez(tmp_path / "p.npz", data=points5)
    np.savetxt(tmp_path / "p.csv", points5, delimiter=",", header="a,b,c,d,e", comments="")
    sets = [load(path=tmp_path / f, val_fraction=0.25, seed=1) for f in ("p.npy", "p.npz", "p.csv")]
    for ds in sets:
        assert ds.kind == "points" and ds.shape == (5,) and ds.train.dtype == torch.float32
        assert (len(ds.train), len(ds.val), len(ds.test)) == (26, 10, 4)
        assert torch.allclose(ds.train, sets[0].train)
    assert sets[2].meta["columns"] == ["a", "b", "c", "d", "e"]


def test_1d_array_becomes_one_column(tmp_path):
    np.save(tmp_path / "v.npy", np.arange(10.0))
    assert load(path=tmp_path / "v.npy").shape == (1,)


def test_csv_without_header(tmp_path):
    (tmp_path / "p.csv").write_text("1,2\n3,4\n5,6\n")
    assert load(path=tmp_path / "p.csv", val_fraction=0.0, test_fraction=0).train.shape == (3, 2)


def test_missing_file_names_path_and_suggests_sibling(tmp_path):
    np.save(tmp_path / "points.npy", np.zeros((3, 2)))
    with pytest.raises(DataError, match=r"pionts\.npy' not found; did you mean .*points\.npy"):
        load(path=tmp_path / "pionts.npy")


def test_corrupt_file_says_unreadable(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"not numpy at all")
    with pytest.raises(DataError, match="could not read .*bad.npy"):
        load(path=tmp_path / "bad.npy")
    (tmp_path / "bad.npz").write_bytes(b"PK-but-not-a-zip")
    with pytest.raises(DataError, match="could not read .*bad.npz"):
        load(path=tmp_path / "bad.npz")


def test_3d_float_array_is_rejected_with_its_shape(tmp_path):
    np.save(tmp_path / "cube.npy", np.zeros((4, 3, 2)))
    with pytest.raises(
        DataError, match=r"2-D array of points \(N, d\), got a 3-D array of shape \(4, 3, 2\)"
    ):
        load(path=tmp_path / "cube.npy")


def test_non_numeric_dtype_is_rejected(tmp_path):
    np.save(tmp_path / "s.npy", np.array([["a", "b"]]))
    with pytest.raises(DataError, match="expected numbers.*dtype <U1"):
        load(path=tmp_path / "s.npy")
    np.save(tmp_path / "o.npy", np.array([[1, None]], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="Python objects.*never unpickles"):
        load(path=tmp_path / "o.npy")


def test_non_numeric_csv_cell_names_line_and_column(tmp_path):
    (tmp_path / "p.csv").write_text("x,y\n1,2\n3,oops\n")
    with pytest.raises(DataError, match=r"line 3, column 2 \('y'\): 'oops' is not a number"):
        load(path=tmp_path / "p.csv")


def test_ragged_csv_names_line(tmp_path):
    (tmp_path / "p.csv").write_text("1,2\n3\n")
    with pytest.raises(DataError, match="line 2 has 1 columns, expected 2"):
        load(path=tmp_path / "p.csv")


def test_nan_and_inf_are_counted_with_first_index(tmp_path):
    a = np.zeros((6, 2))
    a[2, 1], a[4, 0] = np.nan, np.inf
    np.save(tmp_path / "nan.npy", a)
    with pytest.raises(
        DataError, match=r"2 value\(s\) are NaN or infinite; the first is at index \(2, 1\)"
    ):
        load(path=tmp_path / "nan.npy")


def test_empty_array_and_empty_csv_are_rejected(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((0, 3)))
    with pytest.raises(DataError, match="empty"):
        load(path=tmp_path / "e.npy")
    (tmp_path / "e.csv").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        load(path=tmp_path / "e.csv")


def test_unknown_npz_key_lists_keys(tmp_path):
    np.savez(tmp_path / "p.npz", a=np.zeros((3, 2)), b=np.ones((3, 2)))
    with pytest.raises(DataError, match=r"no array 'c'; its keys are \['a', 'b'\]"):
        load(path=tmp_path / "p.npz", key="c")
    assert load(path=tmp_path / "p.npz", key="b", val_fraction=0.0).train.min() == 1


def test_unsupported_suffix_lists_supported(tmp_path):
    (tmp_path / "p.parquet").write_bytes(b"")
    with pytest.raises(DataError, match=r"supported files are \.npy, \.npz, \.csv, \.txt"):
        load(path=tmp_path / "p.parquet")


# --- images ---------------------------------------------------------------------------------------


def test_digits_shape_range_and_labels():
    ds = load("digits")
    assert ds.kind == "images" and ds.shape == (1, 8, 8) and ds.num_classes == 10
    x = torch.cat([ds.train, ds.val, ds.test])
    assert x.min() == -1 and x.max() == 1
    labels = torch.cat([ds.labels_train, ds.labels_val, ds.labels_test])
    assert len(x) == 1797 and set(labels.tolist()) == set(range(10))
    assert (len(ds.val), len(ds.test)) == (180, 180)


def test_mnist_shape_range_and_labels():
    ds = load("mnist", val_fraction=0.1, test_fraction=0.2)
    assert ds.kind == "images" and ds.shape == (1, 28, 28) and ds.num_classes == 10
    assert (len(ds.train), len(ds.val), len(ds.test)) == (7000, 1000, 2000)
    assert ds.meta["bits"] == 8 and len(ds.labels_test) == 2000
    assert ds.train.min() == -1 and ds.train.max() == 1 and ds.train.dtype == torch.float32
    assert ds.labels_train.dtype == torch.int64 and set(ds.labels_train.tolist()) == set(range(10))


def test_mnist_idx_folder_and_magic_number_check(tmp_path):
    images = asset(
        "mnist/t10k-images-idx3-ubyte.gz",
        "9fe7630f90c0e670227960a294637bc2e78a29d724810e24204eb342c9f033a1",
    )
    labels = asset(
        "mnist/t10k-labels-idx1-ubyte.gz",
        "2c54c993d38068b3c3adb720a5cdee07065a066a7b36e7d1df720548d6359eba",
    )
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(images.read_bytes())
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(labels.read_bytes())
    ds = load(path=tmp_path, n=100)
    assert ds.shape == (1, 28, 28) and len(ds.train) + len(ds.val) + len(ds.test) == 100
    (tmp_path / "bad-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="expected a 3-D IDX array, the header says 1-D"):
        read_idx(tmp_path / "bad-images-idx3-ubyte", 3)
    (tmp_path / "junk").write_bytes(b"\x12\x34\x08\x03")
    with pytest.raises(DataError, match="not an IDX file"):
        read_idx(tmp_path / "junk", 3)
    (tmp_path / "short").write_bytes(gzip.decompress(images.read_bytes())[:1000])
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_idx(tmp_path / "short", 3)


def test_bundled_asset_with_wrong_checksum_is_corrupt():
    with pytest.raises(DataError, match="corrupt"):
        asset("mnist/t10k-labels-idx1-ubyte.gz", "0" * 64)


def test_image_folder_with_class_subfolders(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(
                tmp_path / cls / f"{i}.png"
            )
    ds = load(path=tmp_path, val_fraction=0.0, test_fraction=0.0)
    assert ds.shape == (3, 6, 5) and ds.meta["classes"] == ["cat", "dog"] and ds.num_classes == 2
    assert sorted(ds.labels_train.tolist()) == [0, 0, 0, 1, 1, 1]
    assert ds.train.min() >= -1 and ds.train.max() <= 1


def test_image_folder_size_mismatch_names_file_and_resize_option(tmp_path):
    from PIL import Image

    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    Image.new("L", (9, 8)).save(tmp_path / "b.png")
    with pytest.raises(DataError, match=r"b\.png: is 9x8.*pass size="):
        load(path=tmp_path)
    ds = load(path=tmp_path, size=4, val_fraction=0.0)
    assert ds.shape == (1, 4, 4)


def test_uint8_npz_images_in_every_layout(tmp_path):
    rng = np.random.default_rng(0)
    hw = rng.integers(0, 256, (10, 7, 6), dtype=np.uint8)
    layouts = {
        "nhw": hw,
        "nhwc": np.repeat(hw[..., None], 3, -1),
        "nchw": np.repeat(hw[:, None], 3, 1),
    }
    for name, arr in layouts.items():
        np.savez(tmp_path / f"{name}.npz", images=arr, labels=np.arange(10) % 3)
        ds = load(path=tmp_path / f"{name}.npz", val_fraction=0.0, test_fraction=0.0)
        assert ds.kind == "images" and ds.shape[1:] == (7, 6) and ds.num_classes == 3
        expected = torch.from_numpy(hw).double().sum((1, 2)) / 127.5 - 42  # 42 = 7 * 6 pixels
        assert torch.allclose(
            ds.train[:, 0].double().sum((1, 2)).sort().values, expected.sort().values
        )
    np.savez(tmp_path / "x.npz", x=hw)
    first = load(path=tmp_path / "x.npz", val_fraction=0.0, seed=0)
    assert first.train.min() >= -1 and first.train.max() <= 1 and first.meta["bits"] == 8


# --- text -----------------------------------------------------------------------------------------


def test_text_encode_decode_round_trip():
    text = "To be, or not to be — ça va?\n"
    vocab = "".join(sorted(set(text)))
    ids = encode(text, vocab)
    assert ids.dtype == torch.int64 and decode(ids, vocab) == text
    with pytest.raises(DataError, match="'z'.*not in the vocabulary"):
        encode("z", vocab)


def test_shakespeare_vocab_and_contiguous_split():
    ds = load("shakespeare", val_fraction=0.1, test_fraction=0.1)
    chars = ds.meta["vocab"]["chars"]  # of the training block: all 65 of the file
    assert ds.kind == "tokens" and chars == "".join(sorted(chars)) and len(chars) == 65
    assert ds.meta["vocab_size"] == 66 and ds.meta["tokenizer"] == "char"  # and the escape
    assert len(ds.train) + len(ds.val) + len(ds.test) == 1_115_394
    assert decode(ds.train[:14], ds.meta["vocab"]) == "First Citizen:"
    assert len(ds.val) == len(ds.test) == 111_539
    whole = asset(*SHAKESPEARE).read_text(encoding="utf-8")  # train, val, test: in file order
    assert decode(torch.cat([ds.train, ds.val, ds.test]), ds.meta["vocab"]) == whole


def test_text_file_load_and_errors(tmp_path):
    (tmp_path / "book.txt").write_text("abcabcabca", encoding="utf-8")
    ds = load(path=tmp_path / "book.txt", val_fraction=0.2, test_fraction=0.1)
    assert ds.meta["vocab"]["chars"] == "abc" and ds.train.tolist() == [0, 1, 2, 0, 1, 2, 0]
    assert ds.val.tolist() == [1, 2] and ds.test.tolist() == [0]
    (tmp_path / "new.txt").write_text("aaaaaaaaab", encoding="utf-8")  # b only in the test part
    ds = load(path=tmp_path / "new.txt", val_fraction=0.1, test_fraction=0.1)
    # the tokenizer is the training block's: b is its escape (id 1), recorded with its bytes
    assert ds.meta["vocab"]["chars"] == "a" and ds.test.tolist() == [1]
    assert ds.meta["escapes"] == {"train": [], "val": [], "test": [1]}
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        load(path=tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("héllo".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8: byte 0xe9 at byte offset 1"):
        load(path=tmp_path / "latin1.txt")
