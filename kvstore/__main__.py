"""``python -m kvstore``: the ``kvstore`` command (see :mod:`kvstore.cli`)."""

from kvstore.cli import main

raise SystemExit(main())
