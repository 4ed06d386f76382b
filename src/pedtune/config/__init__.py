"""params.yaml: its schema (the one place params are validated), reading, profiles, the generated reference."""

from pedtune.config.load import ConfigError, flatten, load_config, run_params, validate, with_train_overrides
from pedtune.config.schema import StudyConfig

__all__ = ["ConfigError", "StudyConfig", "flatten", "load_config", "run_params", "validate", "with_train_overrides"]
