"""A package opened with ``tarfile``, whose own header parse is bounded.

``tarfile`` reads some headers whole into memory before any member check sees the member they belong to:

* a pax extended header (``x``, ``g``) or a GNU long name (``L``, ``K``): its whole size field, in one read;
* a GNU sparse map: the old ``S`` format follows a chain of 512-byte extension blocks, and the pax 1.0 format
  reads the map from the member's data, each with no end but the archive's.

A package of under 1 MB (gzip packs a repeated letter about 1000:1) thus made the agent, and the controller's
``package verify`` and ``plan``, allocate gigabytes. A separate walk of the raw headers before ``tarfile`` cannot
prevent it: it is a second parser, and every place where it reads the stream differently from ``tarfile`` (a
directory's size field, which ``tarfile`` does not skip; a header it cannot read) hides a header from it. So the
bound lives in ``tarfile``'s own parse: ``open_package`` hands ``tarfile.open`` a TarInfo subclass that refuses,
before reading it, an extended header over EXTENDED_MAX or one past EXTENDED_TOTAL for the whole package (the
names they set are kept, one per member), and refuses every sparse member (a product package has none;
``extract`` would write only its data blocks anyway).

``tarfile`` also trusts the values a pax header sets. A ``size`` record is applied after the data offset is
computed from the raw header: a negative one (or one in a global header, set for every member after it) made the
package's unpacked-bytes total meaningless, and one that moves the offset backwards made ``tarfile`` read the same
headers again and again (the shape of CVE-2025-8194). And its pax record parse is quadratic on some Pythons (a
regular expression over a run of digits, CVE-2024-6232: 14 s of CPU for one 64 KiB header). So BoundedTarInfo
parses pax records itself, in one linear pass (``pax_records``), refuses a malformed buffer, a negative size, a size
in a global header, a size that disagrees with the raw header's, and any header that does not move the offset
forward.

The overridden methods are private to ``tarfile``; ``_proc_member``, ``_proc_pax``, ``_apply_pax_info``,
``_proc_gnulong``, ``_proc_sparse``, ``_decode_pax_field`` and ``fromtarfile`` exist with these roles in CPython
3.8 to 3.13 (read in each version's Lib/tarfile.py). Shared by the host agent and the controller (standard library
only).

``tarfile`` also keeps every member it has read: ``meta_member`` finds package.yaml among the first members only,
and ``shown`` shortens a member's name for a message (a pax name can be 64 KiB).
"""

import tarfile
import tarfile as tarfile_module  # the methods' parameter 'tarfile' (tarfile's own name) hides the module

from .common import AgentError


EXTENDED_MAX = 64 << 10  # bytes of one pax/GNU long-name header: a name or link of PATH_MAX is far below it
EXTENDED_TOTAL = 32 << 20  # bytes of all of them in one package: a pax record of a few hundred bytes per member
EXTENDED = {b"x": "pax", b"X": "pax", b"g": "pax global", b"L": "GNU long name", b"K": "GNU long link name"}
BLOCK = tarfile.BLOCKSIZE
FOLLOWERS = 4  # extended headers looked past to name the member a refused one belongs to


SHOWN = 100  # characters of a long member name a message shows from its start, and as many from its end


def shown(name):
    """A member name as a message shows it: whole up to 2 * SHOWN characters, else its first and last SHOWN around
    "…" (a pax name or link target can be 64 KiB: a refusal names the member in one readable line, not a page)."""
    return name if len(name) <= 2 * SHOWN else name[:SHOWN] + "…" + name[-SHOWN:]


def header_name(block):
    """The member name a raw header holds (its prefix field joined, as ustar says)."""
    name = block[0:100].split(b"\0", 1)[0]
    prefix = block[345:500].split(b"\0", 1)[0] if block[257:262] == b"ustar" else b""
    return (prefix + b"/" + name if prefix else name).decode("utf-8", "replace")


def raw_size(block):
    """A raw header's size field (octal, or GNU base-256), or None when it cannot be read."""
    try:
        return tarfile.nti(block[124:136])
    except (ValueError, tarfile.HeaderError):
        return None


def member_after(fileobj, size):
    """The name of the member whose header follows ``size`` bytes of extended-header data at ``fileobj``'s
    position (None when the archive ends first). A forward seek in a gzip stream reads and drops the data in
    bounded chunks, so this holds none of it."""
    for _ in range(FOLLOWERS):
        if size is None or size < 0:
            return None
        fileobj.seek(fileobj.tell() + (size + BLOCK - 1) // BLOCK * BLOCK)
        block = fileobj.read(BLOCK)
        if len(block) < BLOCK or block == bytes(BLOCK):
            return None
        if block[156:157] not in EXTENDED:
            return header_name(block)
        size = raw_size(block)
    return None


def sparse_refused(name):
    return AgentError("package member %r is a sparse file (GNU sparse format): refused before its sparse map is "
                      "read, a product package has none; do not install this package, ask the vendor" % shown(name),
                      "bad_input", member=shown(name))


LENGTH_DIGITS = 20  # digits of a pax record's length, at most: a record fits in EXTENDED_MAX bytes anyway


def pax_refused(name, why):
    return AgentError("package member %r carries a pax header that %s: refused; do not install this package, ask "
                      "the vendor" % (shown(name), why), "bad_input", member=shown(name))


def pax_records(buf):
    """The (keyword, value) byte pairs of a pax header's data ``buf``, in order, read in one linear pass; None when
    ``buf`` is not a sequence of records "%d %s=%s\n" (length, keyword, value: the length counts the whole
    record) up to its end or its first NUL. CPython's own parse runs regular expressions over the whole buffer,
    quadratic in a run of digits on some versions (CVE-2024-6232), and skips what it cannot read."""
    records, pos = [], 0
    while pos < len(buf) and buf[pos] != 0:
        space = buf.find(b" ", pos, pos + LENGTH_DIGITS + 1)
        digits = buf[pos:space] if space > pos else b""
        if not digits.isdigit():
            return None
        end = pos + int(digits)
        if end - pos < 5 or end > len(buf) or buf[end - 1] != 0x0A:  # the shortest record is "5 k=\n"
            return None
        keyword, equals, value = buf[space + 1:end - 1].partition(b"=")
        if not keyword or not equals:
            return None
        records.append((keyword, value))
        pos = end
    return records


class BoundedTarInfo(tarfile.TarInfo):
    """``tarfile``'s member parse with a bound on every header it reads before a member check can run, and a check
    of every value a pax header sets."""

    def _proc_member(self, tarfile):
        if self.size < 0:  # tarfile would move its offset backwards and read the same headers again
            raise AgentError("package member %r has a negative size field (%d): refused; do not install this "
                             "package, ask the vendor" % (shown(self.name), self.size), "bad_input",
                             member=shown(self.name))
        member = super()._proc_member(tarfile)
        if tarfile.offset <= self.offset:  # CVE-2025-8194: the next header read would be this one or an earlier one
            raise AgentError("package member %r sends the archive's reading back to an earlier header (offset %d "
                             "after %d): refused; do not install this package, ask the vendor"
                             % (shown(member.name), tarfile.offset, self.offset), "bad_input",
                             member=shown(member.name))
        return member

    def _proc_pax(self, tarfile):
        """CPython's ``_proc_pax`` (3.13's semantics), with the records read by ``pax_records``: a malformed header
        and a global ``size`` are refused, naming the member that follows; the sizes a record sets are checked by
        ``_apply_pax_info``. Sparse members are refused (a product package has none)."""
        self._refuse_oversized(tarfile)
        buf = tarfile.fileobj.read(self._block(self.size))
        records = pax_records(buf[:self.size])
        if records is None:
            raise pax_refused(member_after(tarfile.fileobj, 0) or self.name,
                              "is not a list of \"length keyword=value\" records")
        if self.type == b"g" and any(k == b"size" for k, _ in records):
            raise pax_refused(member_after(tarfile.fileobj, 0) or self.name,
                              "is global and sets a size for every member after it")
        pax_headers = tarfile.pax_headers if self.type == b"g" else tarfile.pax_headers.copy()
        self._decode_records(records, pax_headers, tarfile)
        held = sum(len(k) + len(v) for k, v in tarfile.pax_headers.items()) if self.type == b"g" else 0
        try:
            next = self.fromtarfile(tarfile)
        except tarfile_module.HeaderError as e:
            raise tarfile_module.SubsequentHeaderError(str(e)) from None
        if held > EXTENDED_MAX:  # global headers add up: one header's bound does not bound their sum
            raise AgentError("package's pax global headers hold %d bytes together (at most %d are allowed): "
                             "refused; do not install this package, ask the vendor" % (held, EXTENDED_MAX),
                             "bad_input", member=shown(next.name))
        if any(k.startswith("GNU.sparse.") for k in pax_headers):
            raise sparse_refused(pax_headers.get("GNU.sparse.name") or next.name)
        if self.type in (b"x", b"X"):
            next._apply_pax_info(pax_headers, tarfile.encoding, tarfile.errors)
            next.offset = self.offset
            if "size" in pax_headers:  # the data's end, hence the next header, moves with the size
                offset = next.offset_data
                if next.isreg() or next.type not in tarfile_module.SUPPORTED_TYPES:
                    offset += next._block(next.size)
                tarfile.offset = offset
        return next

    def _decode_records(self, records, pax_headers, tarfile):
        """Put the records into ``pax_headers`` as text, as CPython 3.13 does: keywords and values UTF-8, the
        name fields in the archive's encoding when this header's first ``hdrcharset`` record says BINARY."""
        charset = next((v for k, v in records if k == b"hdrcharset"), None)
        encoding = tarfile.encoding if charset == b"BINARY" else "utf-8"
        for raw_keyword, raw_value in records:
            keyword = self._decode_pax_field(raw_keyword, "utf-8", "utf-8", tarfile.errors)
            if keyword in tarfile_module.PAX_NAME_FIELDS:
                value = self._decode_pax_field(raw_value, encoding, tarfile.encoding, tarfile.errors)
            else:
                value = self._decode_pax_field(raw_value, "utf-8", "utf-8", tarfile.errors)
            pax_headers[keyword] = value

    def _proc_gnulong(self, tarfile):
        self._refuse_oversized(tarfile)
        return super()._proc_gnulong(tarfile)

    def _apply_pax_info(self, pax_headers, encoding, errors):
        """Refuse a sparse member's keys and a size that is negative or disagrees with the raw header's non-zero
        one; keep the fields the pax records set, not the records: ``tarfile`` gives every member its own copy of
        them all (the global ones included), which adds up over many members."""
        if any(k.startswith("GNU.sparse.") for k in pax_headers):
            raise sparse_refused(pax_headers.get("GNU.sparse.name") or self.name)
        raw = self.size
        super()._apply_pax_info(pax_headers, encoding, errors)
        self.pax_headers = {}
        if self.size < 0:
            raise pax_refused(self.name, "sets a negative size (%d)" % self.size)
        if raw and self.size != raw:
            raise pax_refused(self.name, "sets a size (%d) other than its header's (%d)" % (self.size, raw))

    def _proc_sparse(self, tarfile):
        raise sparse_refused(self.name)

    def _refuse_oversized(self, tarfile):
        """AgentError (bad_input) for this extended header over EXTENDED_MAX, or for one that takes the package's
        extended headers over EXTENDED_TOTAL (the names they set are kept, one per member), before ``tarfile``
        reads it, naming the member it precedes."""
        total = getattr(tarfile, "extended_read", 0) + self.size
        if self.size <= EXTENDED_MAX and total <= EXTENDED_TOTAL:
            tarfile.extended_read = total
            return
        kind = EXTENDED.get(self.type, "extended")
        what = ("a %s header of %d bytes (at most %d are allowed)" % (kind, self.size, EXTENDED_MAX)
                if self.size > EXTENDED_MAX else
                "a %s header that takes the package's extended headers to %d bytes (at most %d are allowed)"
                % (kind, total, EXTENDED_TOTAL))
        name = member_after(tarfile.fileobj, self.size)
        if name is None:
            raise AgentError("package ends with %s and no member after it: refused; do not install this package, "
                             "ask the vendor" % what, "bad_input")
        raise AgentError("package member %r carries %s: refused before it is read; do not install this package, "
                         "ask the vendor" % (shown(name), what), "bad_input", member=shown(name))


META = "package.yaml"
META_WITHIN = 64  # members read, at most, to find package.yaml: 'upgrader package build' writes it first


def meta_member(tar, what):
    """The ``package.yaml`` member of the package ``tar`` (``what`` names it in messages), None when the package
    ends before one. ``tarfile`` keeps every member it has read (about 1.7 KB each, with its name): a package of
    100,000 tiny members before its package.yaml made a read of the metadata hold them all (175 MB in the review
    that found it) before any member check ran. So package.yaml must be among the first META_WITHIN members (a package that 'upgrader package build'
    made has it first); later, the package is refused (AgentError, bad_input) before more of it is read."""
    for count, member in enumerate(tar, 1):
        if member.name in (META, "./" + META):
            return member
        if count >= META_WITHIN:
            raise AgentError("%s has no %s among its first %d members: refused before more of it is read (a "
                             "package holds its %s first: 'upgrader package build' writes it so); rebuild the "
                             "package with 'upgrader package build', or ask the vendor for one built that way"
                             % (what, META, META_WITHIN, META), "bad_input")
    return None


def open_package(archive):
    """``tarfile.open(archive, "r:gz")`` whose parse refuses (AgentError, bad_input) what BoundedTarInfo bounds."""
    return tarfile.open(archive, "r:gz", tarinfo=BoundedTarInfo)
