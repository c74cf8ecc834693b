"""``python -m skcgcnn``: the ``skcgcnn`` command (see :mod:`skcgcnn.cli`)."""

if __name__ == "__main__":
    from skcgcnn.cli import main

    raise SystemExit(main())
