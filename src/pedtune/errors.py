"""Exceptions the CLI maps to a clear message and a non-zero exit code."""


class PedtuneError(Exception):
    """Base of every error pedtune raises on purpose."""


class DataError(PedtuneError):
    """The dataset (archive, folder, image, mask or split) is missing, corrupt or malformed."""


class WeightsError(PedtuneError):
    """Pretrained weights could not be fetched or do not fit the model."""


class NonFiniteLossError(PedtuneError, FloatingPointError):
    """Training produced a NaN/inf loss; the configuration diverged."""

    def __init__(self, epoch: int, step: int, losses: dict[str, float]) -> None:
        self.epoch, self.step, self.losses = epoch, step, losses
        parts = ", ".join(f"{k}={v:.4g}" for k, v in losses.items())
        super().__init__(f"non-finite loss at epoch {epoch}, step {step}: {parts}")

    def __reduce__(self) -> tuple:
        # Ray copies and pickles a trial's exception; the default rebuilds it from the message alone.
        return type(self), (self.epoch, self.step, self.losses)


class TrackingError(PedtuneError):
    """The MLflow tracking store cannot be reached or used."""


class ClusterError(PedtuneError):
    """The Ray cluster cannot run the stage as configured (no node holds a trial, storage not shared)."""


class UnauthenticatedClusterError(ClusterError):
    """The Ray cluster accepts clients without a token, and params.yaml does not say the network is trusted."""
