"""Data sets on disk: layouts, manifests, image decoding, perturbations and loaders."""
