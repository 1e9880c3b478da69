"""``python -m etcdforge``: the same entry point as the ``etcdforge`` console script."""

from etcdforge.cli import main

if __name__ == "__main__":
    main()
