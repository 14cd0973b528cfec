"""The chat demo: :mod:`~trio_ws.demo.chat.server` (rooms on a hub, a JSON
protocol, the page ``index.html`` on the same port) and
:mod:`~trio_ws.demo.chat.client` (a terminal client). docs/chat.md walks
through them; ``python -m trio_ws chat`` and ``chat-client`` run them."""
