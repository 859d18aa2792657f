"""The three classes, in the order used everywhere (index 0, 1, 2)."""

from __future__ import annotations

CLASSES: tuple[str, ...] = ("dm", "gan", "real")
"""Class names in index order: diffusion-generated, GAN-generated, real."""

CLASS_FOLDER_ALIASES: dict[str, str] = {
    "dm": "dm",
    "dm_generated": "dm",
    "gan": "gan",
    "gan_generated": "gan",
    "real": "real",
}
"""Folder names accepted for each class, including the official release's names."""

BINARY_FOLDERS: dict[str, str] = {"0_real": "real", "1_fake": "fake"}
"""The binary layout's folder names (CNNDetection and its successors) and their meaning."""


def class_index(name: str) -> int:
    """Index of a class name in :data:`CLASSES`."""
    return CLASSES.index(name)


REAL: int = class_index("real")
"""Index of the real class: every other class is fake, and P(fake) = 1 - p[REAL]."""
