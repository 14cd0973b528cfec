"""``python -m trio_ws COMMAND``: chat, chat-client, serve, connect or demo
(see ``python -m trio_ws --help``)."""

from ._cli import main

raise SystemExit(main())
