"""Model adapters and networks. Knows nothing about suites, files or metrics,
except `load`, which reads a converted checkpoint (safetensors + JSON)."""


def load(path, device="cpu"):
    """The preconditioned denoiser stored by `bench import-checkpoint`: forward(x, sigma) = D(x; sigma)."""
    from models.convert import load as _load

    return _load(path, device)
