"""One hub across processes and machines: the Redis backplane, its wire
envelope and presence, and worker processes serving one port."""
