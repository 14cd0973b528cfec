"""A benchmark subprocess: one implementation's echo server, or its client.

Started by ``run.py``, not by hand::

    python bench/worker.py server IMPL
    python bench/worker.py client IMPL URL
    python bench/worker.py connector IMPL URL   (for handshake.py)
"""

from __future__ import annotations

import sys

import runtimes
from echo_impls import BY_KEY


def main(argv: list[str]) -> None:
    role, key, *rest = argv
    impl = BY_KEY[key]
    driver = runtimes.load(impl.runtime)
    module = impl.load()
    if role == "server":
        driver.run_server(module)
    elif role == "client":
        (url,) = rest
        driver.run_client(module, url)
    elif role == "connector":
        (url,) = rest
        driver.run_connector(module, url)
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
