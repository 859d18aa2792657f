"""Interoperation with the official DeepFeatureX release: its model files and its split file."""
