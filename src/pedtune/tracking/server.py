"""Is the MLflow tracking server up? Checked with the standard library alone, so the CLI can
ask before importing torch, Ray or MLflow and a dead server costs a second, not a minute."""

from __future__ import annotations

import urllib.error
import urllib.request

from pedtune.config.schema import MlflowConfig
from pedtune.errors import TrackingError


def check_reachable(cfg: MlflowConfig) -> None:
    """Raise :class:`TrackingError` unless an ``http(s)`` tracking URI answers its health check."""
    uri = cfg.tracking_uri
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=cfg.connect_timeout_s) as response:
            response.read(64)
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingError(
            f"MLflow tracking server {uri} is not reachable ({reason}). Start it, or point "
            "mlflow.tracking_uri in params.yaml at the local store (sqlite:///mlruns/mlflow.db)."
        ) from None
