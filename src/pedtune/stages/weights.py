"""The ``weights`` stage: ``model.weights`` resolved through torchvision into models/pretrained.pt."""

from __future__ import annotations

from pedtune import console, paths
from pedtune.config.schema import StudyConfig
from pedtune.model.weights import save_weights

log = console.get(__name__)


def run_weights(config: StudyConfig) -> None:
    cfg = config.model
    payload = save_weights(cfg, paths.PRETRAINED)
    weights = f"{cfg.weights} weights" if cfg.weights != "none" else "no pretrained weights (random initialisation)"
    console.summary(log, f"{len(payload['state_dict'])} tensors for {cfg.arch}: {weights}", wrote=[paths.PRETRAINED])
