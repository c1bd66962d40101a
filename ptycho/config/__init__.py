"""Configuration: typed dataclasses and the bridge to the legacy ``ptycho.params.cfg`` dict.

Re-exports the public names of :mod:`ptycho.config.config`; see ``specs/config.md``.
"""

from ptycho.config.config import (
    KEY_MAPPINGS,
    InferenceConfig,
    ModelConfig,
    PyTorchExecutionConfig,
    TrainingConfig,
    dataclass_to_legacy_dict,
    update_legacy_dict,
    validate_execution_config,
    validate_inference_config,
    validate_model_config,
    validate_training_config,
)

__all__ = [
    "KEY_MAPPINGS",
    "InferenceConfig",
    "ModelConfig",
    "PyTorchExecutionConfig",
    "TrainingConfig",
    "dataclass_to_legacy_dict",
    "update_legacy_dict",
    "validate_execution_config",
    "validate_inference_config",
    "validate_model_config",
    "validate_training_config",
]
