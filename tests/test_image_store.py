"""Images stay uint8 until the batch is made: the lazy store reads exactly as the float32 images it
stands for, an image folder is decoded once into a cache that later starts map, bad files are named
and counted, and batches (with the optional horizontal flip) resume exactly."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genlab.data import load
from genlab.data.base import from_examples
from genlab.data.images import from_uint8
from genlab.data.store import Uint8Images, decode
from genlab.errors import DataError
from genlab.train.batching import EpochBatcher


def _u8(n=12, c=3, h=5, w=6, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, c, h, w), dtype=np.uint8)


def _old_decode(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(arr.astype(np.float32)) / 127.5 - 1  # what the loaders did before


def test_store_reads_bit_for_bit_as_the_float32_images_it_replaces():
    arr = _u8()
    ds = from_uint8(arr, None, "t", n=None, val_fraction=0.25, test_fraction=0.25, seed=3,
                    source="t", nchw=True)  # fmt: skip
    ref = from_examples("t", "images", _old_decode(arr), n=None, val_fraction=0.25,
                        test_fraction=0.25, seed=3)  # fmt: skip
    for split in ("train", "val", "test"):
        lazy, plain = getattr(ds, split), getattr(ref, split)
        assert isinstance(lazy, Uint8Images) and lazy.rows.dtype == torch.uint8
        assert lazy.shape == plain.shape and len(lazy) == len(plain)
        assert torch.equal(lazy.float(), plain)
        assert torch.equal(lazy[1], plain[1]) and torch.equal(lazy[-1], plain[-1])
        assert torch.equal(lazy[1:3].float(), plain[1:3])
        idx = torch.tensor([2, 0])
        assert torch.equal(lazy[idx].float(), plain[idx])
    both = torch.cat([ds.train, ds.val])  # torch functions and tensor methods decode
    assert torch.equal(both, torch.cat([ref.train, ref.val]))
    assert torch.equal(ds.train * 2 - 1, ref.train * 2 - 1)
    assert torch.equal(ds.train.mean(0), ref.train.mean(0))
    assert np.array_equal(np.asarray(ds.val), ref.val.numpy())
    assert ds.shape == (3, 5, 6)


def test_a_split_of_a_store_holds_row_numbers_not_copies():
    arr = _u8(n=40)
    ds = from_uint8(arr, None, "t", n=30, val_fraction=0.1, test_fraction=0.1, seed=0,
                    source="t", nchw=True)  # fmt: skip
    rows = {ds.train.rows.data_ptr(), ds.val.rows.data_ptr(), ds.test.rows.data_ptr()}
    assert len(rows) == 1  # all three splits index one block of bytes
    kept = torch.cat([ds.train.positions(), ds.val.positions(), ds.test.positions()])
    assert sorted(kept.tolist()) == list(range(30))  # n=30 keeps the first 30, each once


def test_batches_of_a_store_equal_batches_of_the_float_tensor_and_resume_exactly():
    arr = _u8(n=23)
    lazy = Uint8Images(torch.from_numpy(arr))
    plain = _old_decode(arr)
    a = EpochBatcher(lazy, None, 5, seed=1, device="cpu", hflip=True)
    b = EpochBatcher(plain, None, 5, seed=1, device="cpu", hflip=True)
    firsts = []
    for _ in range(11):  # across epoch boundaries
        xa, xb = a.next().x, b.next().x
        assert xa.dtype == torch.float32 and torch.equal(xa, xb)
        firsts.append(xa)
    state = a.state()
    more = [a.next().x for _ in range(4)]
    c = EpochBatcher(lazy, None, 5, seed=1, device="cpu", hflip=True)
    c.load_state(state)
    assert all(torch.equal(c.next().x, m) for m in more)


def test_hflip_mirrors_about_half_the_examples_and_nothing_else():
    arr = _u8(n=400, h=2, w=3)
    lazy = Uint8Images(torch.from_numpy(arr))
    plain = _old_decode(arr)
    flipper = EpochBatcher(lazy, None, 400, seed=0, device="cpu", hflip=True)
    straight = EpochBatcher(lazy, None, 400, seed=0, device="cpu")
    x, x0 = flipper.next().x, straight.next().x  # the same order: only the mirroring differs
    mirrored = (x != x0).flatten(1).any(1)
    assert torch.equal(x[mirrored], x0[mirrored].flip(-1))
    assert 150 < int(mirrored.sum()) < 250
    assert torch.equal(torch.sort(x0.flatten(1), 0)[0], torch.sort(plain.flatten(1), 0)[0])


def _folder(tmp_path, n=6, mode="RGB", size=(7, 5)):
    from PIL import Image

    folder = tmp_path / "pics"
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (folder / c).mkdir(parents=True)
        for i in range(n // 2):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
                folder / c / f"{i}.png"
            )
    return folder


def _entries(tmp_path):
    import os

    root = __import__("pathlib").Path(os.environ["GENLAB_CACHE"]) / "images"
    return sorted(p for p in root.iterdir() if (p / "meta.json").exists()) if root.exists() else []


def test_a_folder_is_decoded_once_and_later_starts_map_the_cache(tmp_path, monkeypatch):
    from PIL import Image

    import genlab.data.image_cache as cache

    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    folder = _folder(tmp_path)
    first = load(path=folder, val_fraction=0.0, test_fraction=0.0)
    assert len(_entries(tmp_path)) == 1
    expected = np.stack(
        [np.asarray(Image.open(f).convert("RGB")) for f in sorted(folder.glob("*/*.png"))]
    ).transpose(0, 3, 1, 2)
    order = first.train.positions().argsort()
    assert torch.equal(first.train.uint8()[order], torch.from_numpy(expected))
    assert first.labels_train[order].tolist() == [0, 0, 0, 1, 1, 1]

    def no_decoding(*a, **k):
        raise AssertionError("decoded again although the cache holds the folder")

    monkeypatch.setattr(cache, "_decode", no_decoding)
    second = load(path=folder, val_fraction=0.0, test_fraction=0.0)
    assert torch.equal(second.train.float(), first.train.float())
    monkeypatch.undo()
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    Image.new("RGB", (7, 5), (9, 9, 9)).save(folder / "cat" / "9.png")  # a new file
    third = load(path=folder, val_fraction=0.0, test_fraction=0.0)
    assert len(third.train) == 7 and len(_entries(tmp_path)) == 2


def test_grayscale_folders_keep_one_channel_and_workers_decode_the_same_bytes(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "c0"))
    folder = _folder(tmp_path, n=8, mode="L")
    a = load(path=folder, val_fraction=0.0, test_fraction=0.0)
    assert a.shape == (1, 5, 7)
    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "c1"))
    b = load(path=folder, val_fraction=0.0, test_fraction=0.0, workers=2)
    assert torch.equal(a.train.uint8(), b.train.uint8())


def test_bad_files_are_named_and_counted_and_nothing_is_cached(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("GENLAB_CACHE", str(tmp_path / "cache"))
    folder = _folder(tmp_path, n=8)
    (folder / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    good = (folder / "dog" / "0.png").read_bytes()
    (folder / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    Image.new("RGB", (3, 3)).save(folder / "dog" / "tiny.png")
    with pytest.raises(DataError) as e:
        load(path=folder)
    msg = str(e.value)
    assert "3 of the 11 images" in msg and "skip_bad" in msg
    assert all(name in msg for name in ("broken.png", "truncated.png", "tiny.png: is 3x3"))
    assert _entries(tmp_path) == []  # nothing written
    ds = load(path=folder, skip_bad=True, val_fraction=0.0, test_fraction=0.0)
    assert len(ds.train) == 8
    meta = json.loads((_entries(tmp_path)[0] / "meta.json").read_text())
    assert sorted(b[0] for b in meta["bad"]) == [
        "cat/broken.png",
        "dog/tiny.png",
        "dog/truncated.png",
    ]
    with pytest.raises(DataError, match="3 of the 11"):  # the cache remembers, and still refuses
        load(path=folder)


def test_folder_options_are_checked(tmp_path):
    folder = _folder(tmp_path)
    with pytest.raises(DataError, match="workers= must be"):
        load(path=folder, workers=-1)
    with pytest.raises(DataError, match="skip_bad= must be"):
        load(path=folder, skip_bad="yes")


def test_hflip_on_points_is_refused_before_training(tmp_path):
    import genlab

    overrides = ["trainer.hflip=true", "trainer.steps=1"]
    with pytest.raises(genlab.GenlabError, match="hflip mirrors images"):
        genlab.train("configs/flow-matching-moons.yaml", tmp_path / "run", overrides=overrides,
                     evaluate=False, verbose=False)  # fmt: skip
    assert not (tmp_path / "run").exists()


def test_decode_is_the_loaders_arithmetic():
    u = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(decode(u), _old_decode(np.arange(256, dtype=np.uint8)))
    assert decode(u)[0] == -1 and decode(u)[-1] == 1
