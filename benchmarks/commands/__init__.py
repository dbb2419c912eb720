"""The command line's parts below ``run_benchmark.py`` (which parses a run and dispatches):
its argument parsing and checks, the ``report`` command, and the commands that inspect without
training (``storage``, ``backbones``, ``cache``). Nothing in the library imports them."""
