"""The chat's terminal client (docs/chat.md), run from a source checkout.

    python examples/chat/client.py ws://127.0.0.1:8765/ --name ann [--room lobby]

Its code ships inside the package, so that ``python -m trio_ws chat-client``
(or ``trio-ws chat-client``) runs it from any directory after ``pip install``:
read it in trio_ws/demo/chat/client.py. This file is that command: the same
options, the same one-line errors.
"""

import sys

from trio_ws._cli import main

if __name__ == "__main__":
    raise SystemExit(main(["chat-client", *sys.argv[1:]]))
