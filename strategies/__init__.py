"""Continual-learning strategies. Importing the package imports every module in it, and so
registers every strategy: a new strategy is a new file here (see ``docs/strategies.md``,
"Adding a strategy"). Strategies register in module-name order (the order of
``strategies: all`` and the README).
``make_strategy`` (``strategies.make``) sets any of them up for your own Avalanche loop."""

import importlib
import pkgutil

from strategies.registry import STRATEGIES, get_strategy, register_strategy  # noqa: F401

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

from strategies.make import make_strategy  # noqa: E402, F401
