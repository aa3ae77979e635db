"""One experiment's configuration: shared sections, dataset folders and per-stage sections, resolved per stage."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import TrainConfigError
from .document import merge, unflatten
from .sections import SHARED_MODEL_FIELDS, STAGES, TrainConfig, _no_unknown, _paths

TOP_KEYS = ("model", "data", "optim", "loss", "run", "stages", "synthetic", "real", "all")
STAGE_KEYS = ("model", "data", "optim", "loss", "run")


@dataclass(frozen=True)
class Config:
    """A whole experiment: shared sections, dataset folders and per-stage sections (see the module docstring)."""

    doc: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        doc = copy.deepcopy(dict(self.doc))
        _no_unknown(doc, TOP_KEYS, "")
        for key in ("synthetic", "all"):
            doc[key] = list(_paths(doc.get(key), key))
        real = doc.get("real")
        if real is not None and not isinstance(real, (str, Path)):
            raise TrainConfigError(f"real must be a dataset folder, got {real!r}")
        doc["real"] = str(real) if real is not None else None
        stages = doc.get("stages") or {}
        if not isinstance(stages, Mapping):
            raise TrainConfigError(f"stages must be a mapping of stage sections, got {stages!r}")
        _no_unknown(stages, STAGES, "stages")
        for name, section in stages.items():
            if section is None:
                continue
            if not isinstance(section, Mapping):
                raise TrainConfigError(f"stages.{name} must be a mapping, got {section!r}")
            _no_unknown(section, STAGE_KEYS, f"stages.{name}")
            if "model" in section and name not in ("decoder", "baseline"):
                raise TrainConfigError(f"stages.{name}.model: only the decoder (F^0) and baseline stages choose their "
                                       f"own model; the others use the top-level model")
        doc["stages"] = {k: dict(v or {}) for k, v in stages.items()}
        object.__setattr__(self, "doc", doc)
        # Validate what the pipeline will need now, not an hour into it; the baseline and end-to-end sections are
        # checked when those commands resolve them.
        if self.is_mixture:
            if self.base.model.model_config.decoder != "identity":
                self.stage("decoder")
            for k in range(self.num_experts):
                self.expert(k)
            self.stage("gating")
            self.stage("global")

    # ------------------------------------------------------------------ accessors
    @property
    def synthetic(self) -> tuple[str, ...]:
        """D^1..D^m, one physvid folder per expert (key ``synthetic``)."""
        return tuple(self.doc["synthetic"])

    @property
    def d_all(self) -> tuple[str, ...]:
        """D^all, the folders of stage 1 (key ``all``); empty: the synthetic folders together."""
        return tuple(self.doc["all"])

    @property
    def real(self) -> str | None:
        return self.doc["real"]

    @property
    def base(self) -> TrainConfig:
        """The top-level sections as a TrainConfig (the STMoE model)."""
        return TrainConfig.from_dict({k: self.doc[k] for k in STAGE_KEYS if k in self.doc})

    def to_dict(self) -> dict:
        return copy.deepcopy(self.doc)

    def replace(self, overrides: Mapping[str, Any]) -> "Config":
        """A copy with dotted or nested overrides applied (by presence)."""
        return Config(merge(self.doc, unflatten(overrides) if any("." in k for k in overrides) else overrides))

    def stage(self, name: str) -> TrainConfig:
        """The TrainConfig of stage ``name``: the shared sections with ``stages.<name>`` merged over them.

        decoder: F^0 = ``stages.decoder.model`` (default MIM, §3.2) with the STMoE's size fields and a conv decoder H.
        experts: not resolved here (one config per expert, :meth:`expert`). baseline: ``stages.baseline.model``
        (default MIM) with the STMoE's size fields and its own conv decoder.
        """
        if name not in STAGES:
            raise TrainConfigError(f"unknown stage {name!r}; allowed: {', '.join(STAGES)}")
        section = self.doc["stages"].get(name, {})
        body = {k: self.doc[k] for k in STAGE_KEYS if k in self.doc}
        stage_model = section.get("model")
        body = merge(body, {k: v for k, v in section.items() if k != "model"})
        if name in ("decoder", "baseline"):
            # F^0 trains the shared conv H; a baseline keeps its own model's decoder (ADDL: the warp alone).
            body["model"] = self._derived_model(stage_model or {}, decoder="conv" if name == "decoder" else None,
                                                where=f"stages.{name}.model")
        try:
            return TrainConfig.from_dict(body)
        except TrainConfigError as exc:
            raise TrainConfigError(f"{exc} (stage {name})") from None

    def _derived_model(self, spec: Mapping[str, Any], decoder: str | None, where: str) -> dict:
        spec = dict(spec)
        name = spec.pop("name", "mim")
        if not isinstance(name, str):
            raise TrainConfigError(f"{where}.name must be a model name, got {name!r}")
        shared = self.shared_model_fields()
        if decoder is None:  # the model's own default decoder
            from ...models import ModelConfigError
            from ...models.registry import model_config_class

            try:
                fields = {f.name: f.default for f in dataclasses.fields(model_config_class(name))}
            except ModelConfigError as exc:
                raise TrainConfigError(f"{where}.{exc}") from None
            decoder = fields["decoder"]
        shared["decoder"] = decoder
        shared.pop("input_frames", None)  # l comes from the stage's data section
        return {"name": name, **shared, **spec}

    def shared_model_fields(self) -> dict[str, Any]:
        """The STMoE's size fields (frame, grid, C_Z, l, layer sizes, decoder kernel) that F^0, experts and baselines share."""
        mc = self.base.model.model_config
        return {k: getattr(mc, k) for k in SHARED_MODEL_FIELDS if hasattr(mc, k)}

    @property
    def is_mixture(self) -> bool:
        return hasattr(self.base.model.model_config, "experts")

    def expert(self, k: int) -> TrainConfig:
        """The TrainConfig of expert k (stage 2): the STMoE's expert k alone, with the STMoE's decoder type."""
        mc = self.base.model.model_config
        if not hasattr(mc, "experts"):
            raise TrainConfigError(f"model.name {self.base.model.name!r} is not a mixture of experts; the experts stage "
                                   f"needs stmoe-id or stmoe-conv")
        if not 0 <= k < len(mc.experts):
            raise TrainConfigError(f"expert index {k} out of range; the model has {len(mc.experts)} experts "
                                   f"(0..{len(mc.experts) - 1})")
        ec = mc.expert_config(k)
        model = {"name": mc.experts[k], **dataclasses.asdict(ec)}
        model.pop("input_frames", None)  # l comes from the stage's data section
        section = self.doc["stages"].get("experts", {})
        body = merge({k2: self.doc[k2] for k2 in STAGE_KEYS if k2 in self.doc}, section)
        body["model"] = model
        try:
            return TrainConfig.from_dict(body)
        except TrainConfigError as exc:
            raise TrainConfigError(f"{exc} (stage experts, expert {k})") from None

    @property
    def num_experts(self) -> int:
        mc = self.base.model.model_config
        return len(mc.experts) if hasattr(mc, "experts") else 0


