"""genlab: train, sample and evaluate every major family of deep generative model on the same data,
with the same metrics, through one API."""

__version__ = "0.1.0"

from genlab import models as _models  # noqa: F401  (registers the families)
from genlab.api import evaluate, evaluate_run, features, reflow, score, train
from genlab.config import Config
from genlab.errors import GenlabError
from genlab.runs import Run, build_model, load_config, load_data, load_run

__all__ = [
    "Config",
    "GenlabError",
    "Run",
    "build_model",
    "evaluate",
    "evaluate_run",
    "features",
    "load_config",
    "load_data",
    "load_run",
    "reflow",
    "score",
    "train",
]
