from pedtune.config.load import ConfigError, flatten, load_config, validate, with_train_overrides
from pedtune.config.schema import StudyConfig

__all__ = ["ConfigError", "StudyConfig", "flatten", "load_config", "validate", "with_train_overrides"]
