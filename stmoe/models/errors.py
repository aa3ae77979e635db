"""Error types of the model package. Every user mistake becomes one of these, naming the field and what is allowed."""
from __future__ import annotations


class ModelConfigError(ValueError):
    """A model configuration value is invalid (unknown model/expert/field, bad size, channel mismatch).

    `field` is the offending config field (e.g. ``"patch_size"``, ``"experts"``, ``"expert_configs[1].out_channels"``);
    the message always starts with it so that a CLI can print it as is.
    """

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}")


class ModelInputError(ValueError):
    """A tensor handed to a model has the wrong shape, dtype or length for the model's config."""

    def __init__(self, argument: str, message: str) -> None:
        self.argument = argument
        super().__init__(f"{argument}: {message}")
