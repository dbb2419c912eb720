"""Continual-learning strategies. Importing the package registers every strategy module."""

from strategies import adapter, classifier, finetune, hat, individual, lwf, meat, piggyback, supsup  # noqa: F401  (registration, in table order)
from strategies.registry import STRATEGIES, get_strategy, register_strategy  # noqa: F401
