"""Vector quantization: nearest codes against brute force, straight-through gradients, the EMA
update against a hand computation, k-means initialization on separated blobs, dead-code restarts,
determinism across a resume, perplexity and usage, eval mode, bad settings, and data parallelism
(gloo, one in-process rank and two forked ranks). Numerics in float64."""

from __future__ import annotations

import copy
import math
import multiprocessing
import os

import pytest
import torch
from safetensors.torch import load_file, save_file

from genlab.errors import ConfigError
from genlab.nets.quantize import QuantizeResult, VectorQuantizer, kmeans


def grid_means(k: int, dim: int, sep: float = 10.0) -> torch.Tensor:
    """``k`` centres ``(k, dim)`` on a square grid of step ``sep`` in the first two coordinates."""
    side = math.ceil(math.sqrt(k))
    means = torch.zeros(k, dim, dtype=torch.float64)
    means[:, 0] = sep * (torch.arange(k) % side)
    means[:, 1] = sep * (torch.arange(k) // side)
    return means


def blobs(means: torch.Tensor, per: int, seed: int, spread: float = 0.05) -> torch.Tensor:
    """``per`` points around each of ``means``, shuffled: ``(k·per, dim)``."""
    g = torch.Generator().manual_seed(seed)
    x = means.repeat_interleave(per, 0)
    x = x + spread * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return x[torch.randperm(len(x), generator=g)]


def make(codes: int, dim: int, init_seed: int = 0, **kw) -> VectorQuantizer:
    torch.manual_seed(init_seed)  # the codebook's random initialization only
    return VectorQuantizer(codes, dim, **kw).double()


def set_codebook(vq: VectorQuantizer, e: torch.Tensor) -> None:
    with torch.no_grad():
        vq.codebook.copy_(e)
        if vq.ema:
            vq.embed_sum.copy_(e * vq.cluster_size[:, None])


def flat(z: torch.Tensor) -> torch.Tensor:
    return z.movedim(1, -1).reshape(-1, z.shape[1])


@pytest.mark.parametrize("shape", [(13, 3), (2, 3, 4, 5), (3, 3, 7)], ids=["BD", "BDHW", "BDL"])
def test_nearest_code_is_brute_force_argmin(shape):
    vq = make(11, 3).eval()
    z = torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    r = vq(z)
    assert isinstance(r, QuantizeResult)
    assert r.indices.dtype == torch.long and r.indices.shape == (shape[0], *shape[2:])
    brute = torch.cdist(flat(z), vq.codebook).argmin(1).view(r.indices.shape)
    assert torch.equal(r.indices, brute)
    assert r.z_q.shape == z.shape
    assert torch.allclose(r.z_q, vq.lookup(r.indices), atol=1e-12, rtol=0)


def test_straight_through_and_commitment_gradient():
    vq = make(7, 3, beta=0.3).eval()
    g = torch.Generator().manual_seed(2)
    z = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    r = vq(z)
    e = vq.codebook[r.indices].movedim(-1, 1)  # the codes, (B, D, H, W)
    assert torch.allclose(r.z_q, e, atol=1e-12, rtol=0)
    w = torch.randn(z.shape, generator=g, dtype=torch.float64)
    (r.z_q * w).sum().backward()
    assert torch.equal(z.grad, w)  # the identity: the decoder's gradient reaches the encoder
    z.grad = None
    vq(z).loss.backward()  # EMA: beta · commitment only
    expected = 0.3 * 2 * (z - e).detach() / z.numel()
    assert torch.allclose(z.grad, expected, atol=1e-15, rtol=1e-12)


def test_ema_with_tiny_decay_moves_codes_to_cluster_means():
    means = grid_means(4, 3)
    vq = make(4, 3, decay=1e-6, eps=1e-12, kmeans_init=False, restart=False).train()
    set_codebook(vq, means + 0.7)  # each code nearest its own blob
    x = blobs(means, 9, seed=3)
    r = vq(x)
    assert torch.equal(torch.bincount(r.indices, minlength=4), torch.full((4,), 9))
    for k in range(4):
        assert torch.allclose(vq.codebook[k], x[r.indices == k].mean(0), atol=1e-6, rtol=0)


def test_ema_update_matches_a_hand_computation():
    K, eps = 5, 1e-2
    means = grid_means(K, 2)
    vq = make(K, 2, decay=0.5, eps=eps, kmeans_init=False, restart=False).train()
    g = torch.Generator().manual_seed(4)
    N0 = torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5], dtype=torch.float64)
    m0 = torch.randn(K, 2, generator=g, dtype=torch.float64)
    e0 = means + 0.3 * torch.randn(K, 2, generator=g, dtype=torch.float64)
    with torch.no_grad():
        vq.cluster_size.copy_(N0)
        vq.embed_sum.copy_(m0)
        vq.codebook.copy_(e0)
    x = blobs(means[:4], 6, seed=5)  # code 4 gets nothing
    vq(x)
    assign = torch.cdist(x, e0).argmin(1)
    n = torch.bincount(assign, minlength=K).double()
    s = torch.zeros(K, 2, dtype=torch.float64).index_add_(0, assign, x)
    N1, m1 = 0.5 * N0 + 0.5 * n, 0.5 * m0 + 0.5 * s
    total = N1.sum()
    smoothed = (N1 + eps) / (total + K * eps) * total
    assert n[4] == 0
    assert torch.allclose(vq.cluster_size, N1, atol=1e-14, rtol=0)
    assert torch.allclose(vq.embed_sum, m1, atol=1e-14, rtol=0)
    assert torch.allclose(vq.codebook, m1 / smoothed[:, None], atol=1e-13, rtol=0)
    assert int(vq.steps) == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kmeans_init_puts_a_code_on_every_blob(seed):
    K = 6
    means = grid_means(K, 3)
    vq = make(K, 3, init_seed=seed, seed=seed).train()  # several draws of k-means++
    x = blobs(means, 20, seed=10 + seed)
    z = x.view(4, 30, 3).transpose(1, 2)  # (B, D, L)
    assert not bool(vq.initialized)
    r = vq(z)
    assert bool(vq.initialized)
    assert torch.cdist(means, vq.codebook).min(1).values.max() < 0.05
    assert float(r.usage) == 1.0
    assert int(vq.restarts_total) == 0  # every cluster has 20 points: nothing dead


def test_kmeans_with_fewer_vectors_than_codes_samples_them():
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    centres, counts = kmeans(x, 8, 5, torch.Generator().manual_seed(0))
    assert torch.cdist(centres, x).min(1).values.max() == 0  # every centre is one of the vectors
    assert counts.sum() == 3


def test_dead_code_is_restarted_on_a_batch_vector():
    K = 5
    means = grid_means(K - 1, 2)
    far = torch.full((1, 2), 1000.0, dtype=torch.float64)
    x = blobs(means, 10, seed=7)
    for restart in (True, False):
        vq = make(K, 2, kmeans_init=False, restart=restart).train()
        set_codebook(vq, torch.cat([means + 0.2, far]))
        vq(x)  # code 4 unused: N_4 = 0.99 < 1
        code = vq.codebook[K - 1]
        if restart:
            assert (x == code).all(1).any()  # exactly one of the encoder outputs
            assert int(vq.restarts_total) == 1
            assert vq.cluster_size[K - 1] == 1 and torch.equal(vq.embed_sum[K - 1], code)
        else:
            assert code.norm() > 500 and int(vq.restarts_total) == 0
    vq = make(K, 2, ema=False, kmeans_init=False).train()  # into the parameter's data
    set_codebook(vq, torch.cat([means + 0.2, far]))
    vq(x)
    assert (x == vq.codebook[K - 1]).all(1).any() and int(vq.restarts_total) == 1


def stream(n: int) -> list[torch.Tensor]:
    """A first batch of 8 blobs, then batches of 2 of them: codes die and are restarted."""
    means = grid_means(8, 2)
    first = blobs(means, 4, seed=20)
    return [first] + [blobs(means[:2], 8, seed=21 + i) for i in range(n - 1)]


def run(vq: VectorQuantizer, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    return [vq(x).indices for x in batches]


def assert_same_state(a: VectorQuantizer, b: VectorQuantizer) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_same_state_same_choices_and_resume_matches_an_uninterrupted_run():
    batches = stream(6)
    kw = {"decay": 0.5}
    a = make(8, 2, init_seed=0, **kw).train()
    start = copy.deepcopy(a.state_dict())
    idx_a = run(a, batches)
    assert int(a.restarts_total) > 0  # k-means init and restarts both happened

    b = make(8, 2, init_seed=1, **kw).train()
    b.load_state_dict(start)
    torch.manual_seed(123)  # the global generator is never used
    assert all(torch.equal(i, j) for i, j in zip(run(b, batches), idx_a))
    assert_same_state(a, b)

    c = make(8, 2, init_seed=2, **kw).train()
    c.load_state_dict(start)
    run(c, batches[:3])
    saved = copy.deepcopy(c.state_dict())
    d = make(8, 2, init_seed=3, **kw).train()
    d.load_state_dict(saved)
    torch.manual_seed(999)
    assert all(torch.equal(i, j) for i, j in zip(run(d, batches[3:]), idx_a[3:]))
    assert_same_state(a, d)


def test_perplexity_and_usage_of_a_known_assignment():
    vq = make(8, 8).eval()
    set_codebook(vq, 10 * torch.eye(8, dtype=torch.float64))
    z = 10 * torch.eye(8, dtype=torch.float64)[[0, 0, 1, 2]]  # frequencies 1/2, 1/4, 1/4
    r = vq(z)
    assert r.indices.tolist() == [0, 0, 1, 2]
    entropy = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert math.isclose(float(r.perplexity), math.exp(entropy), rel_tol=1e-6)
    assert math.isclose(float(r.perplexity), 2**1.5, rel_tol=1e-6)
    assert float(r.usage) == 3 / 8


def test_eval_changes_nothing_and_codebook_loss_reaches_the_parameter():
    means = grid_means(3, 2)
    vq = make(4, 2).eval()  # k-means pending, restarts on
    with torch.no_grad():
        vq.cluster_size.fill_(0.0)  # every code dead if it were training
    before = copy.deepcopy(vq.state_dict())
    for s in range(3):
        vq(blobs(means, 5, seed=30 + s))
    assert_same_state_dict(vq.state_dict(), before)

    vq = make(4, 2, ema=False, kmeans_init=False, restart=False, beta=0.25).train()
    assert isinstance(vq.codebook, torch.nn.Parameter)
    z = blobs(means, 5, seed=33).requires_grad_(True)
    r = vq(z)
    r.loss.backward()
    e = vq.codebook.detach()[r.indices]
    expected = torch.zeros_like(vq.codebook).index_add_(0, r.indices, 2 * (e - z.detach()))
    assert vq.codebook.grad.abs().sum() > 0
    assert torch.allclose(vq.codebook.grad, expected / z.numel(), atol=1e-15, rtol=1e-12)
    assert torch.allclose(z.grad, 0.25 * 2 * (z - e).detach() / z.numel(), atol=1e-15, rtol=0)


def assert_same_state_dict(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize(
    "kw",
    [
        {"codes": 0},
        {"dim": 0},
        {"decay": 0.0},
        {"decay": 1.0},
        {"beta": -0.1},
        {"eps": 0.0},
        {"kmeans_iters": -1},
        {"restart_threshold": -1.0},
    ],
)
def test_bad_settings_raise_config_error(kw):
    args = {"codes": 4, "dim": 3, **kw}
    with pytest.raises(ConfigError):
        VectorQuantizer(args.pop("codes"), args.pop("dim"), **args)


def test_wrong_shape_raises_value_error_naming_both_shapes():
    vq = VectorQuantizer(4, 3)
    with pytest.raises(ValueError, match=r"\(B, 3, \*spatial\).*\(2, 4, 5\)"):
        vq(torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        vq(torch.zeros(3))


def test_one_process_group_of_one_matches_no_process_group(tmp_path):
    """The collective code paths (all-gather, all-reduce, broadcast) at world size 1."""
    batches = stream(5)
    a = make(8, 2, decay=0.5).train()
    b = copy.deepcopy(a)
    idx_a = run(a, batches)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        idx_b = run(b, batches)
    finally:
        torch.distributed.destroy_process_group()
    assert int(a.restarts_total) > 0
    assert all(torch.equal(i, j) for i, j in zip(idx_a, idx_b))
    assert_same_state(a, b)


def _rank(rank: int, store: str, out: str, start: dict, batches: list[torch.Tensor]) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=2
    )
    vq = VectorQuantizer(8, 2, decay=0.5).double().train()
    vq.load_state_dict(start)
    states = []
    for x in batches:
        vq(x.chunk(2)[rank])
        states.append(copy.deepcopy(vq.state_dict()))
    torch.distributed.destroy_process_group()
    flat = {f"{i}.{k}": v.contiguous() for i, st in enumerate(states) for k, v in st.items()}
    save_file(flat, os.path.join(out, f"rank{rank}.safetensors"))


def _load_states(path) -> list[dict[str, torch.Tensor]]:
    """The per-step state dicts a rank wrote (safetensors, no pickle)."""
    states: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in load_file(path).items():
        i, name = key.split(".", 1)
        states.setdefault(int(i), {})[name] = v
    return [states[i] for i in sorted(states)]


@pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method"
)
def test_two_processes_keep_one_codebook(tmp_path):
    """Two ranks, each on half of every batch: the same codebook bit for bit on both after
    k-means init and restarts; after the first step (k-means on the gathered batch, the EMA with
    all-reduced sums), the codebook of one process that sees the whole batch."""
    batches = stream(5)
    one = make(8, 2, decay=0.5).train()
    start = copy.deepcopy(one.state_dict())
    ctx = multiprocessing.get_context("fork")
    args = (str(tmp_path / "store"), str(tmp_path), start, batches)
    procs = [ctx.Process(target=_rank, args=(r, *args)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    s0, s1 = (_load_states(tmp_path / f"rank{r}.safetensors") for r in range(2))
    for a, b in zip(s0, s1):
        assert_same_state_dict(a, b)
    assert int(s0[-1]["restarts_total"]) > 0
    one(batches[0])  # the whole first batch, in rank order
    for k in ("embed", "embed_sum", "cluster_size"):
        assert torch.allclose(s0[0][k], one.state_dict()[k], atol=1e-10, rtol=0), k
