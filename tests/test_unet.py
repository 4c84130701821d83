"""The image U-Net backbone: shapes (odd and non-square sizes included), zero output at
initialisation, class conditioning and its null label, gradients to every parameter, per-example
independence within a batch (float64), and a short fit."""

from __future__ import annotations

import pytest
import torch

from genlab.nets import UNet
from genlab.nets.unet import ResBlock, SelfAttention
from genlab.registry import NETS


def _perturb(module: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> None:
    """Move every parameter away from its initialisation (the zero output conv included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _wake_output(net: UNet, seed: int = 0) -> None:
    """Give the zero-initialised final conv nonzero weights."""
    g = torch.Generator().manual_seed(seed)
    conv = net.out[-1]
    with torch.no_grad():
        conv.weight.copy_(0.1 * torch.randn(conv.weight.shape, generator=g))
        conv.bias.copy_(0.1 * torch.randn(conv.bias.shape, generator=g))


def test_registered() -> None:
    assert NETS.get("unet") is UNet


@pytest.mark.parametrize(
    ("shape", "mults"),
    [
        ((1, 8, 8), (1, 2)),
        ((1, 28, 28), (1, 2, 2)),
        ((3, 12, 12), (1, 2, 2)),
        ((1, 7, 7), (1, 2)),
        ((2, 10, 6), (1, 2, 2)),  # non-square, 10 -> 5 -> 3 and 6 -> 3 -> 2
    ],
)
def test_shapes_and_zero_init(shape: tuple[int, int, int], mults: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    net = UNet(shape, channels=16, channel_mults=mults, time_dim=32)
    x, t = torch.randn(3, *shape), torch.rand(3)
    out = net(x, t)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # zero-initialised output conv
    _wake_output(net)
    out = net(x, t)
    assert out.shape == x.shape and out.abs().sum() > 0 and torch.isfinite(out).all()


def test_out_channels() -> None:
    net = UNet((1, 8, 8), out_channels=2, channels=8, time_dim=16)
    assert net(torch.randn(2, 1, 8, 8), torch.rand(2)).shape == (2, 2, 8, 8)


def test_time_changes_output_and_accepts_log_sigma() -> None:
    torch.manual_seed(0)
    net = UNet((1, 8, 8), channels=8, time_dim=16)
    _wake_output(net)
    x = torch.randn(1, 1, 8, 8).expand(2, -1, -1, -1)
    out = net(x, torch.tensor([-1.7, 1.9]))  # log-sigma-like values
    assert not torch.allclose(out[0], out[1], atol=1e-4)
    # a scalar t is broadcast over the batch
    torch.testing.assert_close(net(x, torch.tensor(0.3)), net(x, torch.full((2,), 0.3)))


def test_class_conditioning_and_null_label() -> None:
    torch.manual_seed(0)
    net = UNet((1, 8, 8), channels=8, time_dim=16, num_classes=10)
    _wake_output(net)
    x, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    a = net(x, t, torch.full((4,), 3))
    b = net(x, t, torch.full((4,), 5))
    assert (a - b).abs().amax() > 1e-4
    torch.testing.assert_close(net(x, t, None), net(x, t, torch.full((4,), 10)), rtol=0, atol=0)
    # an unconditional net ignores y, like the MLP backbone
    plain = UNet((1, 8, 8), channels=8, time_dim=16)
    _wake_output(plain)
    torch.testing.assert_close(plain(x, t, torch.full((4,), 3)), plain(x, t))


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    net = UNet((1, 12, 12), channels=8, channel_mults=(1, 2, 2), time_dim=16, num_classes=3)
    _wake_output(net)
    x, t, y = torch.randn(4, 1, 12, 12), torch.rand(4), torch.tensor([0, 1, 2, 3])
    (net(x, t, y) * torch.randn(4, 1, 12, 12)).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_attention_only_at_lowest_resolution() -> None:
    net = UNet((1, 28, 28), channels=8, channel_mults=(1, 2, 2), time_dim=16)
    attn = [m for m in net.modules() if isinstance(m, SelfAttention)]
    assert len(attn) == 1 and net.mid[0].attn is attn[0]
    assert not any(isinstance(m, SelfAttention) for m in UNet((1, 8, 8), attention=False).modules())


def test_group_and_head_fallback() -> None:
    # 20 channels: 8 groups do not divide, 5 do; 3 heads do not divide 20 (or 40), 2 do
    net = UNet((1, 8, 8), channels=20, heads=3, groups=8, time_dim=16)
    for m in net.modules():
        if isinstance(m, torch.nn.GroupNorm):
            assert m.num_channels % m.num_groups == 0 and m.num_groups <= 8
    assert net.mid[0].attn.heads == 2
    assert net(torch.randn(2, 1, 8, 8), torch.rand(2)).shape == (2, 1, 8, 8)
    assert ResBlock(4, 6, 8, groups=8).norm1.num_groups == 4


def test_examples_are_independent_of_the_batch() -> None:
    torch.manual_seed(0)
    net = UNet((1, 7, 7), channels=8, time_dim=16, num_classes=10).double()
    _perturb(net)  # left in train mode: a BatchNorm would mix the examples there
    x = torch.randn(4, 1, 7, 7, dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, -1.5, 0.9], dtype=torch.float64)
    y = torch.tensor([0, 3, 10, 7])
    out = net(x, t, y)
    assert out.dtype == torch.float64
    alone = torch.cat([net(x[i : i + 1], t[i : i + 1], y[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(out, alone, rtol=0, atol=1e-10)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        UNet((8, 8))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        UNet((1, 8, 8), channel_mults=())
    with pytest.raises(ValueError):
        UNet((1, 8, 8), num_res_blocks=0)
    with pytest.raises(ValueError):
        UNet((1, 8, 8), time_dim=15)


def test_short_fit_denoising() -> None:
    """150 Adam steps regressing clean images from a fixed noised version cut the loss >10x (it reaches ~1e-3x)."""
    torch.manual_seed(0)
    x0 = torch.rand(64, 1, 8, 8) * 2 - 1
    xt = 0.8 * x0 + 0.6 * torch.randn_like(x0)
    t = torch.full((64,), 0.5)
    net = UNet((1, 8, 8), channels=8, time_dim=32)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(150):
        loss = (net(xt, t) - x0).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0], (losses[0], losses[-1])
