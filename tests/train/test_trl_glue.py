"""What train/ relies on in TRL, checked against the installed TRL so an upgrade fails here, by name."""
from __future__ import annotations

import inspect

import trl
from trl import GRPOTrainer

from train.config import GRPO_LOSS_TYPES


def test_every_loss_type_we_accept_is_one_trl_implements():
    source = inspect.getsource(GRPOTrainer)
    missing = [t for t in GRPO_LOSS_TYPES if f'"{t}"' not in source]
    assert not missing, f"TRL {trl.__version__} GRPOTrainer does not implement loss_type {missing}"
