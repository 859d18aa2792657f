"""Loops: training, feature extraction and inference, with device and precision decided once."""
