"""Comparing results of runs that did not run the same batches.

On CPUs the float results of a network can depend on how images are batched (oneDNN picks
kernels by batch shape, e.g. AMX on Intel Xeons), so two runs that split the same images
differently are compared to a stated tolerance, and their decisions (labels, counts,
confusion matrices: everything that is not a float) must be equal. Runs over the same
batches are still compared bit for bit.
"""

from __future__ import annotations

import math
import re

REL_TOLERANCE = 1e-4
"""Relative tolerance for floats of runs with different batch compositions."""
ABS_TOLERANCE = 1e-5
"""Absolute tolerance for floats near zero (probabilities, losses)."""

_NUMBER = re.compile(r"-?\d+\.\d+(?:e[-+]?\d+)?")


def assert_same_up_to_rounding(first, second, where: str = "") -> None:
    """Equal structure and non-floats; floats within the tolerances above."""
    if isinstance(first, float) or isinstance(second, float):
        assert isinstance(first, int | float) and isinstance(second, int | float), where
        if math.isnan(first) or math.isnan(second):
            assert math.isnan(first) and math.isnan(second), where
            return
        assert math.isclose(first, second, rel_tol=REL_TOLERANCE, abs_tol=ABS_TOLERANCE), (
            f"{where}: {first} != {second}"
        )
    elif isinstance(first, dict):
        assert isinstance(second, dict) and first.keys() == second.keys(), where
        for key in first:
            assert_same_up_to_rounding(first[key], second[key], f"{where}.{key}")
    elif isinstance(first, list | tuple):
        assert isinstance(second, list | tuple) and len(first) == len(second), where
        for index, (a, b) in enumerate(zip(first, second)):
            assert_same_up_to_rounding(a, b, f"{where}[{index}]")
    else:
        assert first == second, f"{where}: {first!r} != {second!r}"


def without_decimals(text: str) -> str:
    """Rendered text with every decimal number blanked, to compare its layout and words."""
    return _NUMBER.sub("#", text)
