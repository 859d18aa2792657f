"""The running command's context, and library messages told in its option names.

The library names a setting as its Python parameter in backquotes (```allow_changed```),
so that its messages read right from Python; on the command line each becomes the
running command's option (``--allow-changed``).
"""

from __future__ import annotations

import re

from dfx.cli.framework import Context, current_context

_SETTING = re.compile(r"`([a-z][a-z0-9_]*)`")


def with_option_names(message: str, context: Context | None = None) -> str:
    """``message`` with each ```setting``` replaced by the command's option for it."""
    if "`" not in message:
        return message
    context = context or current_context()
    options: dict[str, str] = {}
    while context is not None:
        for parameter in context.command.params:
            if parameter.param_type_name == "option":
                long = [o for o in parameter.opts if o.startswith("--")] or parameter.opts
                options.setdefault(parameter.name, long[0])
        context = context.parent
    return _SETTING.sub(
        lambda match: options.get(match[1], "--" + match[1].replace("_", "-")), message
    )
