"""The programs behind ``python -m trio_ws`` (the ``trio-ws`` command).

- :mod:`trio_ws.demo.chat`: the chat demo (``chat``, ``chat-client``), a
  server with rooms, its web page and a terminal client, explained step by
  step in the chat tutorial (docs/chat.md).
- :mod:`trio_ws.demo.echo`: an echo server (``serve``), an interactive
  client (``connect``) and a guided tour (``demo``).

They ship with the package so that the commands run from any directory
after ``pip install``. They are programs to read and run, not part of the
library's API: ``import trio_ws`` does not import them.
"""
