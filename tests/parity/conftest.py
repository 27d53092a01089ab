import numpy as np
import pytest

torch = pytest.importorskip("torch")


class TorchDraws:
    """A runtime generator that returns torch's standard-normal draws, in call order."""

    def __init__(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(seed)

    def standard_normal(self, size, dtype=np.float32):
        return torch.randn(size, generator=self.generator, dtype=torch.float32).numpy()


@pytest.fixture
def torch_draws():
    return TorchDraws
