"""``python -m etcdforge``: the same entry point as the ``etcdforge`` console script."""

from etcdforge.fastpath import entry

if __name__ == "__main__":
    entry()
