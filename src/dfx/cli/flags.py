"""The root command's global flags, set once per invocation."""

from __future__ import annotations

import os


class GlobalFlags:
    """--debug and --quiet (and ``DFX_DEBUG``), read by error handling and the consoles."""

    debug: bool = bool(os.environ.get("DFX_DEBUG"))
    """Print tracebacks of errors."""
    quiet: bool = False
    """No progress bars or notices (also set on processes other than rank 0)."""
