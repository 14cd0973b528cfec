"""Starts wstest as run.py needs it. Python 2.7 code: run by the wstest virtualenv.

    .nox/wstest-py27/bin/python wstest_launcher.py [--stock] -m MODE -s SPEC [wstest options]

- The fuzzing server listens on 127.0.0.1 only (wstest itself binds it to
  every interface).
- Unless ``--stock`` is given, wstest's own bookkeeping in the
  permessage-deflate cases (12.* and 13.*, 216 of the 517 cases and most of
  the run's time) gets two speedups. Neither changes a byte on the wire, a
  case or a verdict:

  * SHA-1 through OpenSSL's libcrypto. Those cases hash every message wstest
    sends and every echo it gets back, to compare them. pyenv's Python 2.7
    has no ``_hashlib`` (2.7 does not build against OpenSSL 3), so
    ``hashlib.sha1`` is the slow built-in ``_sha``: about a quarter of
    wstest's time in those cases. The digests are checked against
    ``hashlib.sha1`` first.
  * In the text cases, wstest decodes its whole test data file (190 or
    260 KB of UTF-8) for every message, only to cut one message out of it:
    the decoded text is kept for the case instead.

  Where a speedup cannot be set up, a line on stderr says so and wstest runs
  without it.

Needs only what wstest's virtualenv has; no f-strings and no ``print`` (this
file is also linted as Python 3).
"""

import ctypes
import ctypes.util
import hashlib
import sys
import types


def note(text):
    sys.stderr.write("wstest_launcher: " + text + "\n")
    sys.stderr.flush()


def bind_to_loopback():
    from autobahntestsuite import fuzzing

    listen = fuzzing.listenWS

    def listen_on_loopback(factory, contextFactory=None, backlog=50, interface=""):
        return listen(factory, contextFactory, backlog, "127.0.0.1")

    fuzzing.listenWS = listen_on_loopback


def libcrypto_sha1():
    """A ``hashlib.sha1`` work-alike computed by libcrypto, or None."""
    name = ctypes.util.find_library("crypto")
    if name is None:
        note("no libcrypto: SHA-1 stays Python's built-in one")
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.EVP_sha1.restype = ctypes.c_void_p
        lib.EVP_sha1.argtypes = []
        lib.EVP_Digest.restype = ctypes.c_int
        lib.EVP_Digest.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_char_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        algorithm = lib.EVP_sha1()
    except (OSError, AttributeError) as exc:
        note("libcrypto unusable (" + repr(exc) + "): SHA-1 stays Python's built-in one")
        return None

    class Sha1:
        digest_size = 20

        def __init__(self, data=b""):
            self._parts = [data]

        def update(self, data):
            self._parts.append(data)

        def digest(self):
            data = b"".join(self._parts)
            out = ctypes.create_string_buffer(20)
            if lib.EVP_Digest(data, len(data), out, None, algorithm, None) != 1:
                raise ValueError("EVP_Digest failed")
            return out.raw

        def hexdigest(self):
            return self.digest().encode("hex")

    samples = [b"", b"abc", b"\x00\xff" * 70001, bytes(bytearray(range(256))) * 513]
    for sample in samples:
        split = Sha1(sample[:7])
        split.update(sample[7:])
        if Sha1(sample).digest() != hashlib.sha1(sample).digest() or (
            split.digest() != hashlib.sha1(sample).digest()
        ):
            note("libcrypto's SHA-1 disagrees with hashlib's: not used")
            return None
    return Sha1


class TextOnce(str):
    """The test data's bytes, decoded once per encoding, at the first ``decode``."""

    def decode(self, *args):
        cache = self.__dict__.setdefault("_decoded", {})
        if args not in cache:
            cache[args] = str.decode(self, *args)
        return cache[args]


def speed_up_compression_cases():
    from autobahntestsuite.case import case12_x_x

    cases = case12_x_x.Case12_X_X + case12_x_x.Case13_X_X
    original_init = case12_x_x.init
    if not cases or any(case.__dict__.get("init") is not original_init for case in cases):
        note("unexpected wstest version: no speedups")
        return

    def init(self):
        original_init(self)
        if not self.TESTDATA["binary"]:
            self.testData = TextOnce(self.testData)

    for case in cases:
        case.init = init
    sha1 = libcrypto_sha1()
    if sha1 is not None:
        shim = types.ModuleType("hashlib_via_libcrypto")
        shim.sha1 = sha1
        case12_x_x.hashlib = shim  # these cases' hashing only, not the handshake's
    how = "SHA-1 by libcrypto" if sha1 is not None else "SHA-1 by Python"
    note("cases 12.* and 13.*: " + how + ", test data decoded once per case")


def main():
    args = sys.argv[1:]
    stock = "--stock" in args
    if stock:
        args.remove("--stock")
    bind_to_loopback()
    if not stock:
        speed_up_compression_cases()
    from autobahntestsuite import wstest

    sys.argv[0] = "wstest"
    sys.argv[1:] = args
    wstest.run()


if __name__ == "__main__":
    main()
