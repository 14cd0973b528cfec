"""``python -m trio_ws serve | connect URL | demo``."""

from ._cli import main

raise SystemExit(main())
