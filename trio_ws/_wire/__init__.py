"""The wire, without I/O: messages over wsproto's frames (assembly, limits, copy-free
framing and reading), permessage-deflate, masking, close codes."""
