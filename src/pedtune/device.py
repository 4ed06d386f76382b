"""Which torch device a run uses: ``train.device`` (auto, cpu, cuda) resolved on this machine, in one place."""

from __future__ import annotations

import torch

from pedtune.config.load import ConfigError


def resolve_device(choice: str) -> torch.device:
    """``auto`` takes CUDA when there is one; ``cuda`` without one is a configuration error."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available here (use auto or cpu)")
    return torch.device(choice)


def describe_device(device: torch.device) -> str:
    """``cpu``, or ``cuda (NVIDIA H100 80GB HBM3)``: as reports and run tags name it."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type
