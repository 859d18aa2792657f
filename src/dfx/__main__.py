"""``python -m dfx``."""

from dfx.cli import main

if __name__ == "__main__":
    main()
