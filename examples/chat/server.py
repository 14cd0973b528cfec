"""The chat server of the tutorial (docs/chat.md), run from a source checkout.

    python examples/chat/server.py                 # http://127.0.0.1:8765/ until Ctrl-C
    python examples/chat/server.py --port 0        # a free port

Its code ships inside the package, so that ``python -m trio_ws chat`` (or
``trio-ws chat``) runs it from any directory after ``pip install``: read it
in trio_ws/demo/chat/server.py, and its page in trio_ws/demo/chat/index.html.
This file is that command: the same options, the same one-line errors.
"""

import sys

from trio_ws._cli import main

if __name__ == "__main__":
    raise SystemExit(main(["chat", *sys.argv[1:]]))
