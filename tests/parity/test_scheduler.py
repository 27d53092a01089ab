"""The NumPy LCM scheduler against diffusers' own LCMScheduler: timesteps and step(), bit for bit."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from lcm_runtime.errors import InputError
from lcm_runtime.schedulers.scheduling_lcm import LCMScheduler, LCMSchedulerConfig, compute_tables

CONFIGS = [
    {},
    {"prediction_type": "v_prediction"},
    {"prediction_type": "sample", "clip_sample": True, "clip_sample_range": 0.5},
    {"original_inference_steps": 25, "timestep_scaling": 5.0},
]


def torch_tables(reference):
    """The float32 tables, computed with torch as lcm-export does."""
    alphas = reference.alphas_cumprod
    scalings = [reference.get_scalings_for_boundary_condition_discrete(torch.tensor(t)) for t in range(len(alphas))]
    return {
        "alphas_cumprod": alphas.numpy(),
        "sqrt_alphas_cumprod": alphas.sqrt().numpy(),
        "sqrt_one_minus_alphas_cumprod": (1 - alphas).sqrt().numpy(),
        "c_skip": torch.stack([s[0] for s in scalings]).float().numpy(),
        "c_out": torch.stack([s[1] for s in scalings]).float().numpy(),
    }


class TorchDraws:
    def __init__(self, generator):
        self.generator = generator

    def standard_normal(self, size, dtype=np.float32):
        return torch.randn(size, generator=self.generator, dtype=torch.float32).numpy()


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_step_matches_diffusers_bit_for_bit(config, steps):
    reference = diffusers.LCMScheduler(**config)
    ours = LCMScheduler(LCMSchedulerConfig.from_dict(dict(reference.config)), torch_tables(reference))
    reference.set_timesteps(steps)
    ours.set_timesteps(steps)
    np.testing.assert_array_equal(ours.timesteps, reference.timesteps.numpy())

    sample_t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sample = sample_t.numpy().copy()
    ref_gen, our_gen = torch.Generator().manual_seed(1), TorchDraws(torch.Generator().manual_seed(1))
    for index, t in enumerate(reference.timesteps):
        model_output = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(100 + index))
        sample_t, denoised_t = reference.step(model_output, t, sample_t, generator=ref_gen, return_dict=False)
        sample, denoised = ours.step(model_output.numpy(), int(t), sample, our_gen)
        np.testing.assert_array_equal(denoised, denoised_t.numpy())
        np.testing.assert_array_equal(sample, sample_t.numpy())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_inference_steps": 4, "strength": 0.5},
        {"num_inference_steps": 3, "original_inference_steps": 20},
        {"num_inference_steps": 6, "original_inference_steps": 100, "strength": 0.7},
        {"timesteps": [999, 759, 499, 259]},
        {"timesteps": [999, 600, 300, 10], "strength": 0.5},
        {"num_inference_steps": 50},
    ],
)
def test_timesteps_match_diffusers(kwargs):
    reference = diffusers.LCMScheduler()
    ours = LCMScheduler(LCMSchedulerConfig.from_dict(dict(reference.config)))
    reference.set_timesteps(**kwargs)
    ours.set_timesteps(**kwargs)
    np.testing.assert_array_equal(ours.timesteps, reference.timesteps.numpy())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_inference_steps": 0},
        {"num_inference_steps": 51},
        {"num_inference_steps": 30, "strength": 0.5},
        {"timesteps": [10, 20]},
        {"timesteps": [1000, 10]},
    ],
)
def test_out_of_range_steps_are_refused_where_diffusers_refuses_or_misbehaves(kwargs):
    ours = LCMScheduler(LCMSchedulerConfig())
    with pytest.raises(InputError):
        ours.set_timesteps(**kwargs)


def test_numpy_tables_are_close_to_torch_tables():
    """Folders without shipped tables (optimum-cli exports) get NumPy tables: close, not exact."""
    reference = diffusers.LCMScheduler()
    expected = torch_tables(reference)
    computed = compute_tables(LCMSchedulerConfig.from_dict(dict(reference.config)))
    for name, table in expected.items():
        np.testing.assert_allclose(
            computed[name], table, rtol=1e-4, atol=1e-7, err_msg=name
        )  # 1 - a amplifies cumprod rounding


def test_guidance_embedding_matches_diffusers():
    from diffusers import LatentConsistencyModelPipeline

    from lcm_runtime.guidance import guidance_scale_embedding

    for dim in (256, 33):
        w = torch.tensor([0.0, 1.0, 7.0, 0.5])
        expected = LatentConsistencyModelPipeline.get_guidance_scale_embedding(None, w, embedding_dim=dim).numpy()
        ours = guidance_scale_embedding(w.numpy(), dim)
        assert ours.dtype == np.float32 and ours.shape == expected.shape
        np.testing.assert_allclose(ours, expected, atol=1e-3)
