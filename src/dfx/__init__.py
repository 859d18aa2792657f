"""dfx: tell real, GAN-generated and diffusion-generated images apart (DeepFeatureX Net).

Heavy modules (torch) load on first use, so ``import dfx`` and ``dfx --help`` stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dfx._version import __version__
from dfx.classes import CLASSES

if TYPE_CHECKING:
    from dfx.api import Detector, Prediction, load_detector

__all__ = ["CLASSES", "Detector", "Prediction", "__version__", "load_detector"]


def __getattr__(name: str):
    if name in ("Detector", "Prediction", "load_detector"):
        from dfx import api

        return getattr(api, name)
    raise AttributeError(f"module 'dfx' has no attribute {name!r}")
