"""The recipe's stages, one module each: categorize -> baseline -> experts -> router (MMoE) or -> i2moe (I2MoE).

Each stage is a function ``run_<stage>(ctx, dataset, ...)`` over a ``datasets.DatasetDict``: it builds its model,
trains it with a ``transformers.Trainer`` whose loss is the model's own ``forward`` (:func:`.common.train_stage`),
writes what it trained into ``<run_dir>/<stage>/`` with a record of its inputs (:mod:`mmoe.training.records`), and
on a rerun with the same inputs loads that instead of training again.
"""

from .baseline import run_baseline
from .categorize import run_categorize
from .context import StageContext
from .experts import run_experts
from .i2moe import run_i2moe
from .router import run_router

__all__ = ["StageContext", "run_baseline", "run_categorize", "run_experts", "run_i2moe", "run_router"]
