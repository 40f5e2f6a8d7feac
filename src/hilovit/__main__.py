"""`python -m hilovit ...` (what torchrun launches) is the `hilovit` command."""

from hilovit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
