"""``python -m cli``: the same as the ``imagefactory`` console script."""

from cli.app import main

if __name__ == "__main__":
    raise SystemExit(main())
