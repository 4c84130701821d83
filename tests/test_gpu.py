"""Every family on a CUDA GPU: its tiny recipe trains in fp32, bf16 and compiled with finite
losses near fp32's, diffusion samplers on CUDA equal the CPU's, a run resumes exactly on CUDA,
and no training step syncs the host with the device. Marked ``gpu`` and skipped, with the
reason, where no GPU is present; ``bash bench/gpu_check.sh`` runs them on one."""

from __future__ import annotations

import pytest
import torch
from families import RECIPES, TINY

import genlab
from genlab.train.trainer import Trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine"),
]
STEPS = 4
# the first step's loss in bf16 against fp32 from the same weights and batch: relative tolerance
# (bf16 keeps 8 bits of mantissa; a loss sums many terms, so its error is well under 1%)
BF16_RTOL = 0.05


def trainer(name: str, tmp_path, *extra: str) -> Trainer:
    tiny = RECIPES[name]
    cfg = genlab.load_config(tiny.path, tiny.args("trainer.device=cuda", "trainer.log_every=1000",
                                                  f"trainer.steps={STEPS}", *extra))  # fmt: skip
    data = genlab.load_data(cfg)
    torch.manual_seed(0)
    model = genlab.build_model(cfg, data)
    return Trainer(model, data, cfg, tmp_path / "-".join([name, *extra]).replace("=", "_"))


def first_losses(tr: Trainer) -> list[dict[str, float]]:
    tr.model.train()
    try:
        return [{k: float(v) for k, v in tr.train_step().items()} for _ in range(STEPS)]
    finally:
        tr.close()


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_family_trains_on_cuda_in_fp32_bf16_and_compiled(name, tmp_path):
    fp32 = first_losses(trainer(name, tmp_path))
    bf16 = first_losses(trainer(name, tmp_path, "trainer.precision=bf16"))
    compiled = first_losses(
        trainer(name, tmp_path, "trainer.precision=bf16", "trainer.compile=true")
    )
    for run in (fp32, bf16, compiled):
        assert all(torch.isfinite(torch.tensor(list(s.values()))).all() for s in run), run
    for key, want in fp32[0].items():  # the same weights and batch: only the arithmetic differs
        for got in (bf16[0][key], compiled[0][key]):
            assert abs(got - want) <= BF16_RTOL * abs(want) + 1e-2, (key, got, want)


@pytest.mark.parametrize("sampler", ["euler", "heun", "ddim", "dpmpp-2m"])
def test_cuda_samplers_equal_the_cpu_samplers(sampler):
    cfg = genlab.load_config(RECIPES["diffusion"].path, RECIPES["diffusion"].args())
    data = genlab.load_data(cfg)
    torch.manual_seed(0)
    model = genlab.build_model(cfg, data).eval()
    noise = torch.randn(256, 2, generator=torch.Generator().manual_seed(1))
    cpu = model.sample(256, sampler=sampler, steps=10, noise=noise).x
    gpu = model.to("cuda").sample(256, sampler=sampler, steps=10, noise=noise).x.cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["flow-matching", "gan", "vqvae", "gpt"])
def test_a_run_resumes_exactly_on_cuda(name, tmp_path):
    full = trainer(name, tmp_path)
    full.fit()
    trainer(name, tmp_path / "b").fit(stop_at=STEPS // 2)
    tiny = RECIPES[name]
    cfg = genlab.load_config(tiny.path, tiny.args("trainer.device=cuda", "trainer.log_every=1000",
                                                  f"trainer.steps={STEPS}"))  # fmt: skip
    data = genlab.load_data(cfg)
    resumed = Trainer(genlab.build_model(cfg, data, resume=True), data, cfg,
                      tmp_path / "b" / name)  # fmt: skip
    resumed.fit(resume=True)
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_no_training_step_syncs_the_host_on_cuda(name, tmp_path):
    tr = trainer(name, tmp_path)
    tr.model.train()
    try:
        for _ in range(3):
            tr.train_step()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(2):
                tr.train_step()
        finally:
            torch.cuda.set_sync_debug_mode(0)
    finally:
        tr.close()
