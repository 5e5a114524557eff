"""`python -m farmer ...` is the same as the `farmer` console script."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
