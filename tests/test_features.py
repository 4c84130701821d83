"""genlab.feature_networks: the feature networks behind the image metrics (architecture, content hash,
training recipe, cache and its checks, the autoencoder fallback).

Training uses quick variants of the recipe (far fewer steps), whose hash differs from the real
recipe's, so a quick net can never be taken for the real one.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import genlab.feature_networks as feats
from genlab.data import load
from genlab.data.base import Dataset, from_examples
from genlab.data.images import load_image_folder
from genlab.errors import CheckpointError, DataError
from genlab.feature_networks import (
    RECIPE,
    Recipe,
    content_hash,
    default_cache_dir,
    describe,
    feature_network,
    fingerprint,
    load_feature_network,
)
from genlab.nets.features import FeatureNet, conv_plan

QUICK = Recipe(min_steps=100, max_steps=100)  # ~95% on digits in a few seconds
TINY = Recipe(min_steps=20, max_steps=20)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load("digits", val_fraction=0.0)


@pytest.fixture(scope="module")
def cached(digits, tmp_path_factory):
    """The quick digits network, trained once into a module-wide cache folder."""
    root = tmp_path_factory.mktemp("features")
    net, info = feature_network(digits, cache_dir=root, recipe=QUICK, verbose=False)
    return root, net, info


@pytest.fixture
def count_training(monkeypatch):
    """Counts calls of the training routine (still trains)."""
    calls = []
    real = feats._train

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(feats, "_train", counted)
    return calls


def relabelled(ds: Dataset, **kw) -> Dataset:
    """``ds``'s content again, re-split by ``from_examples`` (``kw``: val_fraction, seed...)."""
    x = torch.cat([ds.train, ds.val])
    y = None if ds.labels_train is None else torch.cat([ds.labels_train, ds.labels_val])
    args = {"n": None, "val_fraction": 0.0, "seed": 0, **kw}
    return from_examples(ds.name, "images", x, labels=y, num_classes=ds.num_classes, **args)


# --- architecture ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 12, 20), (4, 64, 16)])
def test_architecture_fits_each_shape(shape):
    plan = conv_plan(shape)
    assert len(plan) >= 3 and max(plan[-1][2]) <= 4  # downsampled until the map is small
    net = FeatureNet(shape, num_classes=7)
    x = torch.rand(5, *shape) * 2 - 1
    assert net.features(x).shape == (5, 128)
    assert net.logits(x).shape == (5, 7)
    assert torch.allclose(net.probs(x).sum(1), torch.ones(5))
    assert net.features(x[:0]).shape == (0, 128)
    # batching changes the summation order only (GEMM blocking), not the values beyond rounding
    assert torch.allclose(net.features(x, batch_size=2), net.features(x), atol=1e-5)
    with pytest.raises(DataError, match="shape"):
        net.features(torch.zeros(2, shape[0], shape[1] + 1, shape[2]))


def test_folding_batch_norm_keeps_the_function():
    torch.manual_seed(0)
    net = FeatureNet((1, 12, 20), 3, norm=True)
    for bn in net.norms:  # non-trivial statistics and affine parameters
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.normal_()
        bn.bias.data.normal_()
    net.eval()
    x = torch.randn(6, 1, 12, 20)
    folded = net.folded()
    assert all(isinstance(n, torch.nn.Identity) for n in folded.norms)
    assert torch.allclose(folded.features(x), net.features(x), atol=1e-5)


# --- content hash ------------------------------------------------------------------------------


def test_hash_ignores_order_and_split_but_sees_one_pixel_or_label(digits):
    ds = relabelled(digits, n=300)
    h = content_hash(ds)
    assert len(h) == 64
    assert content_hash(relabelled(ds, val_fraction=0.3, seed=5)) == h  # another split
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(1))
    x, y = ds.train[perm], ds.labels_train[perm]
    shuffled = Dataset("other name", "images", x[:200], x[200:], y[:200], y[200:], num_classes=10)
    assert content_hash(shuffled) == h  # another order (and name)
    pixel = ds.train.clone()
    pixel[17, 0, 3, 4] += 0.125
    assert content_hash(Dataset("d", "images", pixel, ds.val, ds.labels_train, ds.labels_val)) != h
    label = ds.labels_train.clone()
    label[17] = (label[17] + 1) % 10
    assert content_hash(Dataset("d", "images", ds.train, ds.val, label, ds.labels_val)) != h
    unlabelled = Dataset("d", "images", ds.train, ds.val)
    assert content_hash(unlabelled) != h
    minus_zero = torch.where(ds.train == 0, -0.0, ds.train)  # -0.0 and 0.0 are the same value
    assert content_hash(Dataset("d", "images", minus_zero, ds.val)) == content_hash(unlabelled)


def test_hash_refuses_non_images():
    ds = Dataset("pts", "points", torch.zeros(4, 2), torch.zeros(0, 2))
    with pytest.raises(DataError, match="image"):
        content_hash(ds)


def test_recipe_hash_covers_every_field():
    assert Recipe(epochs=15).hash == Recipe(epochs=15.0).hash == RECIPE.hash
    assert QUICK.hash != RECIPE.hash
    assert Recipe(seed=1).hash != RECIPE.hash
    assert Recipe.from_dict(QUICK.to_dict()) == QUICK


# --- training and cache ------------------------------------------------------------------------


def test_quick_training_on_digits_is_sane(cached):
    root, net, info = cached
    assert info.kind == net.kind == "classifier" and info.has_classes
    # its data: the train and validation parts of the digits (1,617 of 1,797: never the test
    # part), of which it holds out a fifth itself
    assert info.heldout_examples == 323 and info.train_examples == 1617 - 323
    assert info.heldout_accuracy > 0.90
    assert info.steps == 100 and info.recipe_hash == QUICK.hash
    assert info.path.parent == root and info.path.name == feats.entry_name(
        info.data_hash, QUICK.hash
    )
    assert (info.path / "network.safetensors").stat().st_size == info.weights_size
    meta = json.loads((info.path / "network.json").read_text())
    assert meta["data_hash"] == info.data_hash and meta["torch_version"] == torch.__version__
    assert len(info.hash) == 12 and meta["weights_sha256"].startswith(info.hash)
    text = describe(info)
    assert "classifier" in text and "%" in text and str(info.path) in text


def test_cached_network_is_reused_with_identical_features(cached, digits, count_training):
    root, net, info = cached
    # the same content, split otherwise: the same entry, no training
    net2, info2 = feature_network(
        relabelled(digits, val_fraction=0.25), cache_dir=root, recipe=QUICK
    )
    assert count_training == []
    assert info2 == info
    x = digits.train[:64]
    assert net2.features(x).equal(net.features(x))
    # the real recipe is another entry: it is never served by the quick net
    with pytest.raises(CheckpointError, match="no feature network"):
        feature_network(digits, cache_dir=root, train_if_missing=False)


def test_training_is_a_function_of_the_content(digits):
    ds = relabelled(digits, n=300)
    perm = torch.randperm(300, generator=torch.Generator().manual_seed(3))
    x, y = ds.train[perm], ds.labels_train[perm]
    other = Dataset("d", "images", x[:250], x[250:], y[:250], y[250:], num_classes=10)
    _, a, _ = feats.train_feature_network(ds, recipe=TINY)
    _, b, _ = feats.train_feature_network(other, recipe=TINY)
    assert a.weights_sha256 == b.weights_sha256


def test_entry_for_other_data_is_refused(cached, digits, tmp_path):
    root, _, info = cached
    other = relabelled(digits, n=1000)
    # an entry copied under the other data's name is caught by the data hash in its JSON
    fake = tmp_path / feats.entry_name(content_hash(other), QUICK.hash)
    shutil.copytree(info.path, fake)
    with pytest.raises(DataError, match="1000 examples here, 1617 in its data") as e:
        feature_network(other, cache_dir=tmp_path, recipe=QUICK, train_if_missing=False)
    assert "\n" not in str(e.value) and info.data_hash[:12] in str(e.value)
    # explicit paths (--features PATH): with a fingerprint, a bare hash, or no check at all
    mnist_like = Dataset("m", "images", torch.zeros(10, 1, 28, 28), torch.zeros(0, 1, 28, 28))
    with pytest.raises(DataError, match=r"image shape \(1, 28, 28\) here, \(1, 8, 8\)"):
        load_feature_network(info.path, expected_hash=fingerprint(mnist_like))
    with pytest.raises(DataError, match="no labels here, 10 classes in its data"):
        load_feature_network(
            info.path, fingerprint(Dataset("u", "images", digits.train, digits.val))
        )
    with pytest.raises(DataError, match="trained on other data"):
        load_feature_network(info.path / "network.json", expected_hash="0" * 64)
    net, info2 = load_feature_network(info.path, expected_hash=info.data_hash)
    assert info2 == info and net.kind == "classifier"


def test_corrupt_weights_are_detected(cached, digits, tmp_path, count_training):
    root, _, info = cached
    entry = tmp_path / info.path.name
    shutil.copytree(info.path, entry)
    weights = entry / "network.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one flipped bit
    weights.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="corrupt.*sha256.*delete the folder") as e:
        feature_network(digits, cache_dir=tmp_path, recipe=QUICK)
    assert str(weights) in str(e.value)
    assert count_training == []  # never retrained silently over an entry reports may cite
    weights.write_bytes(bytes(blob[:-10]))
    with pytest.raises(CheckpointError, match=f"{len(blob) - 10} bytes"):
        load_feature_network(entry)
    (entry / "network.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="network.json"):
        load_feature_network(entry)


def test_entry_without_json_is_retrained(cached, digits, tmp_path, count_training):
    root, _, info = cached
    entry = tmp_path / info.path.name
    entry.mkdir()
    (entry / "network.safetensors").write_bytes(b"half a file")  # interrupted before the JSON
    net, info2 = feature_network(digits, cache_dir=tmp_path, recipe=QUICK, verbose=False)
    assert count_training == [1]
    assert info2.data_hash == info.data_hash and info2.path == entry
    assert load_feature_network(entry)[1] == info2


def test_default_cache_dir_follows_genlab_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "features"
    monkeypatch.delenv("GENLAB_CACHE")
    assert default_cache_dir().parts[-3:] == (".cache", "genlab", "features")


# --- unlabelled images -------------------------------------------------------------------------


def test_autoencoder_for_an_unlabelled_png_folder(tmp_path, digits):
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    pixels = ((digits.train[:120, 0] + 1) * 127.5).round().to(torch.uint8).numpy()
    for i, img in enumerate(pixels):  # 8x8 digits padded to 12x20 (not square)
        Image.fromarray(np.pad(img, ((2, 2), (6, 6)))).save(folder / f"{i:03d}.png")
    ds = load_image_folder(folder, val_fraction=0.1)
    assert ds.labels_train is None and ds.shape == (1, 12, 20)
    net, info = feature_network(
        ds, cache_dir=tmp_path / "cache", recipe=Recipe(min_steps=60, max_steps=60), verbose=False
    )
    assert info.kind == net.kind == "autoencoder"
    assert not info.has_classes and not net.has_classes and info.num_classes is None
    # 120 images, 108 of them in the train and validation parts; a fifth of those held out
    assert info.heldout_accuracy is None and info.heldout_examples == 22
    assert info.heldout_mse < info.baseline_mse  # the code keeps more than the mean image does
    assert net.features(ds.train).shape == (len(ds.train), 128)
    with pytest.raises(DataError, match="autoencoder"):
        net.probs(ds.train)
    assert "autoencoder" in describe(info) and "reconstruction" in describe(info)
    assert load_feature_network(info.path)[0].kind == "autoencoder"
