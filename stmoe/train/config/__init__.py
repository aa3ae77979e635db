"""Training configuration: frozen dataclasses, presets, YAML files and dotted command-line overrides.

sections.py    one stage: ModelSpec, DataConfig, OptimConfig, RunConfig, TrainConfig (each field checked on construction)
experiment.py  Config: the whole experiment, resolved per stage (Config.stage, Config.expert)
document.py    merge by presence, dotted keys (--set), YAML in and out
presets.py     the named presets, read from presets/*.yaml

One document describes a whole experiment (paper §3.2 and §4)::

    model:  {name: stmoe-conv, height: 64, ...}     # the STMoE (or any registered model); its config fields inline
    data:   {input_frames: 4, output_frames: 6, batch_size: 16, split: [0.8, 0.1, 0.1], ...}
    optim:  {epochs: 20, lr: 0.001, schedule: cosine, grad_clip: 1.0, ...}
    loss:   {recon_alpha: 0.0, recon_c: 0.9, ...}   # stmoe.losses.LossConfig, Eq. 7-8
    run:    {seed: 0, device: auto, precision: auto, ...}
    synthetic: [D1, D2, D3]                         # D^k, one physvid folder per expert (local optimisation)
    all: []                                         # D^all; empty = the synthetic folders together
    real: DIR                                       # the (small) real dataset (global optimisation)
    stages:                                         # per-stage sections, deep-merged over the ones above
      decoder: {model: {name: mim}, loss: {...}}    #   F^0 of stage 1 (inherits the STMoE's size fields)
      experts: {...}   gating: {...}   global: {...}   end_to_end: {...}   baseline: {model: {name: mim}}

Precedence: preset < YAML file < command line. Merging goes by presence: a key the command line did not set never
overrides the file, whatever its value (0, false and "" do override). :meth:`Config.stage` resolves the
:class:`TrainConfig` of one stage.
"""
from __future__ import annotations

from ...losses import LossConfig
from .document import dump_yaml, merge, parse_assignment, read_yaml, unflatten
from .experiment import STAGE_KEYS, TOP_KEYS, Config
from .presets import PRESET_NAMES, PRESETS, load_config, preset_document, preset_path
from .sections import (PIPELINE_STAGES, SHARED_MODEL_FIELDS, STAGES, DataConfig, ModelSpec, OptimConfig, RunConfig,
                       TrainConfig)

__all__ = ["STAGES", "PIPELINE_STAGES", "PRESETS", "PRESET_NAMES", "DataConfig", "OptimConfig", "RunConfig", "ModelSpec",
           "TrainConfig", "Config", "load_config", "preset_document", "preset_path", "read_yaml", "merge", "unflatten",
           "parse_assignment", "dump_yaml", "LossConfig", "SHARED_MODEL_FIELDS", "STAGE_KEYS", "TOP_KEYS"]
