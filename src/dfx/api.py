"""The Python API: load a detector file and classify images.

>>> import dfx
>>> detector = dfx.load_detector("model.pt")
>>> [p.label for p in detector.predict(["photo.jpg"])]
['real']

The public names live in the library's engine and are re-exported here.
"""

from __future__ import annotations

from dfx.engine.detector import Detector, load_detector
from dfx.engine.predictions import ImageInput, Prediction
from dfx.threshold import DEFAULT_THRESHOLD, Threshold

__all__ = [
    "DEFAULT_THRESHOLD",
    "Detector",
    "ImageInput",
    "Prediction",
    "Threshold",
    "load_detector",
]
