"""The root command's global flags, set once per invocation."""

from __future__ import annotations

import os

TRUE_WORDS = ("1", "true", "yes")
"""Values of an environment switch such as ``DFX_DEBUG`` that turn it on (any case)."""


def env_switch(name: str) -> bool:
    """Whether the environment variable ``name`` is 1, true or yes; anything else is off."""
    return os.environ.get(name, "").strip().lower() in TRUE_WORDS


class GlobalFlags:
    """--debug and --quiet (and ``DFX_DEBUG``), read by error handling and the consoles."""

    debug: bool = env_switch("DFX_DEBUG")
    """Print tracebacks of errors."""
    quiet: bool = False
    """No progress bars or notices (also set on processes other than rank 0)."""
