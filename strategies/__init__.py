"""Continual-learning strategies. Importing the package registers every strategy module."""

from strategies import classifier, finetune, individual, meat  # noqa: F401  (registration)
from strategies.registry import STRATEGIES, get_strategy, register_strategy  # noqa: F401
