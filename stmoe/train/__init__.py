"""Training, evaluation and prediction of the STMoE (paper §3.2 local/global optimisation, §4) and its baselines.

    load_config(preset, file, overrides) -> Config       presets tiny / small / paper, YAML, dotted overrides
    train_decoder / train_experts / train_gating / train_global / train_end_to_end / train_baseline / run_pipeline
                                                          (each takes init=CKPT: fine-tuning from another run)
    evaluate(checkpoint, data) -> metrics dict            per predicted frame and averaged (stmoe.metrics)
    predict(checkpoint, data, out)                        HDF5, GIF, PNG strips, attention overlays per expert
    forecast(checkpoint, data, out, horizon=H)            H frames past l observed ones, beyond the data if need be
    prepare_dataset(source, out, ...)                     real videos / frames / arrays / radar -> physvid shards
                                                          (stmoe.data.prepare)
    plot_run(run_dir, out)                                training curves as PNG
"""
from __future__ import annotations

from ..data.prepare import prepare_dataset
from .checkpoint import load_checkpoint, load_model, save_checkpoint
from .config import (PRESETS, STAGES, Config, DataConfig, ModelSpec, OptimConfig, RunConfig, TrainConfig, load_config,
                     parse_assignment)
from .data import ClipDataset, make_loader, split_clip, split_ranges, to_unit
from .errors import NonFiniteLossError, TrainConfigError, TrainError
from .evaluate import evaluate
from .forecast import forecast
from .plot import plot_run
from .predict import predict
from .stages import (init_weights, run_pipeline, train_baseline, train_decoder, train_end_to_end, train_expert,
                     train_experts, train_gating, train_global)
from .trainer import Trainer, TrainResult, seed_everything

__all__ = [
    "PRESETS", "STAGES", "Config", "DataConfig", "ModelSpec", "OptimConfig", "RunConfig", "TrainConfig", "load_config",
    "parse_assignment", "ClipDataset", "make_loader", "prepare_dataset", "split_clip", "split_ranges", "to_unit",
    "NonFiniteLossError", "TrainConfigError", "TrainError", "evaluate", "forecast", "plot_run", "predict", "run_pipeline",
    "train_baseline", "train_decoder", "train_end_to_end", "train_expert", "train_experts", "train_gating",
    "train_global", "init_weights", "Trainer", "TrainResult", "seed_everything", "load_checkpoint", "load_model", "save_checkpoint",
]
