"""A package's raw tar headers, walked before ``tarfile`` parses the archive.

``tarfile`` reads a pax extended header (``x``, ``g``) or a GNU long name (``L``, ``K``) whole into memory and
decodes it, before any member check sees the member it belongs to: a 1 MB package whose pax ``comment`` is 1 GiB
of one letter (gzip packs it about 1000:1) makes the agent, and the controller's ``package verify`` and ``plan``,
allocate gigabytes. This walk reads the decompressed stream 512 bytes at a time, skips member data in bounded
chunks, and refuses any such header larger than EXTENDED_MAX, naming the member it precedes. Shared by the host
agent and the controller (standard library only).
"""

import gzip

from .common import CHUNK, AgentError


EXTENDED_MAX = 64 << 10  # bytes of one pax/GNU long-name header: a name or link of PATH_MAX is far below it
EXTENDED = {b"x": "pax", b"g": "pax global", b"L": "GNU long name", b"K": "GNU long link name"}
BLOCK = 512


def header_size(block):
    """The size field of a raw tar header: octal, or GNU base-256 (first byte 0x80 or 0xff)."""
    field = block[124:136]
    if field[0] in (0x80, 0xFF):
        n = 0
        for b in field[1:]:
            n = (n << 8) | b
        return -((1 << 88) - n) if field[0] == 0xFF else n
    text = field.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def header_name(block):
    """The member name a raw header holds (its prefix field joined, as ustar says)."""
    name = block[0:100].split(b"\0", 1)[0]
    prefix = block[345:500].split(b"\0", 1)[0] if block[257:262] == b"ustar" else b""
    return (prefix + b"/" + name if prefix else name).decode("utf-8", "replace")


def check_headers(archive, limit=EXTENDED_MAX):
    """Walk the gzip-compressed tar ``archive``'s headers; AgentError (bad_input) for an extended header over
    ``limit`` bytes, naming the member it precedes. A damaged stream is left to tarfile to report."""
    with gzip.open(archive, "rb") as f:
        too_big = None
        while True:
            block = f.read(BLOCK)
            if len(block) < BLOCK or block == bytes(BLOCK):
                break
            try:
                size = header_size(block)
            except ValueError:
                break  # tarfile says how this archive is damaged
            kind = EXTENDED.get(block[156:157])
            if kind and size > limit and too_big is None:
                too_big = (kind, size)
            elif too_big and not kind:
                raise AgentError("package member %r carries a %s header of %d bytes (at most %d are allowed): refused "
                                 "before it is read; do not install this package, ask the vendor"
                                 % (header_name(block), too_big[0], too_big[1], limit), "bad_input",
                                 member=header_name(block))
            if not skip(f, (max(size, 0) + BLOCK - 1) // BLOCK * BLOCK):
                break
    if too_big:
        raise AgentError("package ends with a %s header of %d bytes (at most %d are allowed) and no member after it: "
                         "refused; do not install this package, ask the vendor" % (too_big[0], too_big[1], limit),
                         "bad_input")


def skip(f, n):
    """Read past ``n`` bytes of ``f`` in bounded chunks; False when the stream ended first."""
    while n > 0:
        data = f.read(min(n, CHUNK))
        if not data:
            return False
        n -= len(data)
    return True


def open_package(archive):
    """``tarfile.open(archive, "r:gz")`` once check_headers found no extended header over its bound."""
    import tarfile

    check_headers(archive)
    return tarfile.open(archive, "r:gz")
