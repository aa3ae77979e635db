"""Models of the paper (§3.1 STMoE) and its baselines (§4), all behind one interface (see docs/models.md).

Importing this package registers every built-in model; a new expert is one new module plus one import line here.
"""
from __future__ import annotations

from .base import Expert, ModelConfig, State, freeze_, patchify, unpatchify
from .errors import ModelConfigError, ModelInputError
from .predictor import Output, Predictor, rollout
from .registry import (create_expert, create_model, list_experts, list_models, model_config_class, model_from_spec,
                       model_spec, register_model)

# Importing a module registers its model(s); a new expert is one more name here.
from . import addl, convlstm, mim, phydnet, predrnnpp, unet  # noqa: E402,F401
from . import stmoe  # noqa: E402,F401
from .stmoe import STGN, STMoEConfig  # noqa: E402

__all__ = [
    "Expert", "ModelConfig", "State", "Output", "Predictor", "STGN", "STMoEConfig", "ModelConfigError",
    "ModelInputError", "create_expert", "create_model", "freeze_", "list_experts", "list_models",
    "model_config_class", "model_from_spec", "model_spec", "patchify", "register_model", "rollout", "unpatchify",
]
