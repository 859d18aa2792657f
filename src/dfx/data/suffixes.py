"""File-name extensions that promise an image (no heavy imports: the CLI's parser uses them)."""

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".jfif", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".apng"}
    | {".heic", ".heif", ".avif"}
)
"""Extensions that promise an image: such a file that is not one is reported, not ignored."""
