"""stmoe: the Spatio-Temporal Mixture of Experts of the paper (§3) and its baselines, in PyTorch."""
from __future__ import annotations

from .models import (Output, Predictor, create_model, list_experts, list_models, model_config_class, model_from_spec,
                     model_spec, register_model, rollout)
from .models.errors import ModelConfigError, ModelInputError

__all__ = ["Output", "Predictor", "ModelConfigError", "ModelInputError", "create_model", "list_experts",
           "list_models", "model_config_class", "model_from_spec", "model_spec", "register_model", "rollout"]
