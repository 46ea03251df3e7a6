"""``python -m app`` is the same as the ``aivonx-proxy`` console script."""

from app.cli import main

raise SystemExit(main())
