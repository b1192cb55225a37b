"""The ``floodway`` command line.

``floodway --app module:app COMMAND``; ``--app`` may come from ``FLOODWAY_APP``. Commands that
only read or change jobs also work with just a database (``--database`` or
``FLOODWAY_DATABASE_URL``). Every command takes ``--json`` for scripts and prints a readable
table otherwise. Exit codes: 0 ok, 1 failed (a job failed or is not found, the database is
unreachable, full or read-only), 2 usage error (bad arguments or configuration).
"""

from __future__ import annotations

from . import admin, bulk, forecast, jobs  # noqa: F401  (their commands register themselves on ``cli``)
from .core import EXIT_FAILED, EXIT_OK, EXIT_USAGE, State, accept_global_options_after_commands, cli, load_app, main

accept_global_options_after_commands(cli)

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "State", "cli", "load_app", "main"]
