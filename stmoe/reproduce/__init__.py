"""The paper's experiments (§4) by one command: `stmoe reproduce EXPERIMENT --profile P --out DIR` (docs/results.md).

``reproduce(experiment, profile, out, seeds=1, resume=False)`` generates the physvid data, trains every row with the
same budget (resumably), evaluates on held-out data (Dynamic MNIST: digits the training set never shows), and writes
``out/<experiment>/{results.json, table.md, *.png}`` with the paper's numbers beside ours.
"""
from .runner import ReproduceError, reproduce
from .spec import ALL, EXPERIMENTS, PROFILES, PROFILES_HELP, Profile, Row, experiment_rows

__all__ = ["reproduce", "ReproduceError", "EXPERIMENTS", "PROFILES", "PROFILES_HELP", "ALL", "Profile", "Row",
           "experiment_rows"]
