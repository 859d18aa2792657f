"""A Dataset over image files that never fails on one bad file, and its collate function."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dfx import distributed
from dfx.data.decoding import ImageBytes, load_rgb, to_rgb
from dfx.data.shuffle import EpochShuffleSampler, ShardSampler
from dfx.errors import ImageReadError
from dfx.limits import DEFAULT_MAX_PIXELS


@dataclass
class Failure:
    """An input that could not be used, and why."""

    index: int
    """Position of the input in the data set."""
    reason: str
    """Why it failed, in a few words."""
    source: str = ""
    """The file path (or a description of an in-memory image)."""

    def to_dict(self) -> dict:
        """The JSON record of a report's ``failures``."""
        return {"path": self.source, "error": self.reason}


class ImageDataset(Dataset):
    """Images (paths, encoded bytes or in-memory Pillow images) with integer targets.

    An item is ``(tensor, target, index)``; an unreadable image gives ``(None, Failure, index)``
    so that the collate function can drop it and the run can report it.
    """

    def __init__(
        self,
        images: Sequence[str | Path | ImageBytes | Image.Image],
        targets: Sequence[int] | None,
        transform: Callable[[Image.Image], torch.Tensor],
        perturbation: Callable[[Image.Image], Image.Image] | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.images = list(images)
        self.max_pixels = max_pixels
        self.targets = list(targets) if targets is not None else [-1] * len(self.images)
        self.transform = transform
        self.perturbation = perturbation
        # Files may be shrunk while decoding when the next step is the resize; a perturbation
        # (JPEG re-encoding) must see the image at its real size, so then they are not.
        resize = getattr(transform, "resize", None)
        self.decode_size = resize if perturbation is None and isinstance(resize, int) else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        source = self.images[index]
        try:
            return self.make_input(self.decode(source)), self.targets[index], index
        except (ImageReadError, OSError, ValueError) as error:
            name = str(source) if not isinstance(source, Image.Image) else f"image #{index}"
            return None, Failure(index, str(error), name), index

    def decode(self, source: str | Path | ImageBytes | Image.Image) -> Image.Image:
        """One input as RGB, decoded as every item is (ImageReadError with the reason)."""
        # In-memory images go through the same mode conversion as decoded files.
        if isinstance(source, Image.Image):
            return to_rgb(source)
        return load_rgb(source, self.max_pixels, target_size=self.decode_size)

    def make_input(self, image: Image.Image) -> torch.Tensor:
        """The network input of one decoded RGB image."""
        if self.perturbation is not None:
            image = self.perturbation(image)
        return self.transform(image)


class VariantDataset(ImageDataset):
    """Each image decoded once and returned as a stack of perturbed variants.

    An item is ``(tensor (V, C, H, W), target, index)``, variant ``v`` being
    ``transform(perturbations[v](image))``; if any variant fails, the image fails as a whole
    so that every variant is measured on the same images.
    """

    def __init__(
        self,
        images: Sequence[str | Path | ImageBytes | Image.Image],
        targets: Sequence[int] | None,
        transform: Callable[[Image.Image], torch.Tensor],
        perturbations: Sequence[Callable[[Image.Image], Image.Image]],
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        super().__init__(images, targets, transform, max_pixels=max_pixels)
        self.perturbations = list(perturbations)
        # Perturbations (JPEG above all) must see each image at its stored size.
        self.decode_size = None

    def make_input(self, image: Image.Image) -> torch.Tensor:
        """The (V, C, H, W) stack of the image's perturbed variants."""
        if self.max_pixels is not None:
            # An enlarging perturbation must not make the bomb the pixel limit keeps out.
            for perturb in self.perturbations:
                if hasattr(perturb, "output_size"):
                    width, height = perturb.output_size(image.size)
                    if width * height > self.max_pixels:
                        raise ImageReadError(
                            f"too many pixels after {perturb.name} ({width}×{height} > "
                            f"the limit of {self.max_pixels:,})"
                        )
        return torch.stack([self.transform(perturb(image)) for perturb in self.perturbations])


@dataclass
class Batch:
    """A collated batch: the readable images, their targets and positions, and the failures."""

    inputs: torch.Tensor
    """Stacked input tensors (possibly with zero rows)."""
    targets: torch.Tensor
    """Integer targets (-1 where unknown)."""
    indices: torch.Tensor
    """Positions of the rows in the data set."""
    failures: list[Failure]
    """Items of this batch that could not be read."""

    def pin_memory(self) -> Batch:
        self.inputs = self.inputs.pin_memory()
        return self


def unpack(batch) -> tuple[torch.Tensor, torch.Tensor, list[Failure]]:
    """(inputs, targets, failures) from an image :class:`Batch` or an (inputs, targets) pair."""
    if isinstance(batch, Batch):
        return batch.inputs, batch.targets, batch.failures
    inputs, targets = batch
    return inputs, targets, []


def failure_records(failures: list[Failure]) -> list[dict]:
    """Unreadable inputs as JSON records, each file once."""
    unique = {f.source: f for f in failures}
    return [f.to_dict() for f in unique.values()]


def collate_images(items: list) -> Batch:
    """Stack the readable items; keep the unreadable ones as failures."""
    good = [item for item in items if item[0] is not None]
    failures = [item[1] for item in items if item[0] is None]
    if good:
        inputs = torch.stack([item[0] for item in good])
    else:
        inputs = torch.empty(0)
    targets = torch.tensor([item[1] for item in good], dtype=torch.long)
    indices = torch.tensor([item[2] for item in good], dtype=torch.long)
    return Batch(inputs, targets, indices, failures)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    workers: int = 0,
    pin_memory: bool = False,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader with dfx's collate function and a shuffle fixed by (seed, epoch).

    In a data-parallel run the loader yields this process's share of the data set and
    ``batch_size`` is per process: when shuffling for training, every ``world``-th position
    of each epoch's order, padded; otherwise whole batches of a single process's run, so
    that every batch holds the same inputs as in one process (:class:`ShardSampler`).
    """
    generator = torch.Generator().manual_seed(seed)
    rank, world = distributed.rank(), distributed.world_size()
    if shuffle:
        sampler = EpochShuffleSampler(len(dataset), seed, num_replicas=world, rank=rank)
    else:
        sampler = ShardSampler(len(dataset), rank, world, batch_size) if world > 1 else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate_images,
        pin_memory=pin_memory,
        generator=generator,
        persistent_workers=workers > 0,
    )
