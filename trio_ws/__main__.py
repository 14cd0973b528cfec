"""``python -m trio_ws chat | chat-client URL | serve | connect URL | demo``."""

from ._cli import main

raise SystemExit(main())
