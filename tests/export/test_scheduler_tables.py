"""The shipped scheduler tables are diffusers' own numbers, bit for bit."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402

from lcm_runtime.bundle import SCHEDULER_TABLES, read_json, scheduler_table_file  # noqa: E402


@pytest.fixture(scope="module")
def tables(tiny_bundle_fp32):
    return {name: np.load(tiny_bundle_fp32 / scheduler_table_file(name)) for name in SCHEDULER_TABLES}


@pytest.fixture(scope="module")
def scheduler(tiny_bundle_fp32):
    from diffusers import LCMScheduler

    return LCMScheduler.from_config(read_json(tiny_bundle_fp32 / "scheduler" / "scheduler_config.json"))


def test_alphas_and_square_roots_bit_exact(tables, scheduler):
    alphas_cumprod = scheduler.alphas_cumprod
    np.testing.assert_array_equal(tables["alphas_cumprod"], alphas_cumprod.numpy())
    np.testing.assert_array_equal(tables["sqrt_alphas_cumprod"], (alphas_cumprod**0.5).numpy())
    np.testing.assert_array_equal(tables["sqrt_one_minus_alphas_cumprod"], ((1 - alphas_cumprod) ** 0.5).numpy())


def test_boundary_scalings_bit_exact_at_every_timestep(tables, scheduler):
    for t in range(scheduler.config.num_train_timesteps):
        c_skip, c_out = scheduler.get_scalings_for_boundary_condition_discrete(torch.tensor(t))
        assert tables["c_skip"][t] == np.float32(c_skip), t
        assert tables["c_out"][t] == np.float32(c_out), t


@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_tables_reproduce_diffusers_step_bit_for_bit(tables, scheduler, steps):
    """A NumPy step built only from the tables equals LCMScheduler.step exactly."""
    generator = torch.Generator().manual_seed(steps)
    scheduler.set_timesteps(steps)
    sample = torch.randn(1, 4, 8, 8, generator=generator)
    numpy_sample = sample.numpy().copy()
    timesteps = scheduler.timesteps.tolist()
    for index, t in enumerate(scheduler.timesteps):
        model_output = torch.randn(1, 4, 8, 8, generator=generator)
        noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(100 + index))
        step_generator = torch.Generator().manual_seed(100 + index)
        sample, denoised = scheduler.step(model_output, t, sample, generator=step_generator, return_dict=False)

        eps, x = model_output.numpy(), numpy_sample
        prev_t = timesteps[index + 1] if index + 1 < len(timesteps) else int(t)
        x0 = (x - tables["sqrt_one_minus_alphas_cumprod"][int(t)] * eps) / tables["sqrt_alphas_cumprod"][int(t)]
        numpy_denoised = tables["c_out"][int(t)] * x0 + tables["c_skip"][int(t)] * x
        if index != len(timesteps) - 1:
            numpy_sample = (
                tables["sqrt_alphas_cumprod"][prev_t] * numpy_denoised
                + tables["sqrt_one_minus_alphas_cumprod"][prev_t] * noise.numpy()
            )
        else:
            numpy_sample = numpy_denoised
        np.testing.assert_array_equal(numpy_denoised, denoised.numpy())
        np.testing.assert_array_equal(numpy_sample, sample.numpy())
