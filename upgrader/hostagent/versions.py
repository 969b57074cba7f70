"""The installed version, read from a file (or a member of an archive in the install) or a command's output,
and compared with another.
"""

import os
import re

from .beneath import read_beneath
from .common import AgentError
from .processes import run_shell


def read_version(paths, source):
    """The installed version, from a file (+ optional regex) or a command's output."""
    pattern = source.get("pattern") or r"^\s*(\S+)"
    if source.get("file"):
        f = os.path.join(paths.install, source["file"])
        try:
            if source.get("member"):
                text, why = read_version_member(paths, source)
                if text is None:
                    return None, why
            else:
                text = read_beneath(paths.install, source["file"], "version file", 65536).decode("utf-8", "replace")
        except FileNotFoundError:
            return None, "version file %s not found" % f
        except AgentError as e:  # another account's file put there (a hard link of a root-only file): not disclosed
            if not e.data.get("not_disclosed") and not e.data.get("hard_link"):
                raise
            return None, str(e)
    else:
        res = run_shell(source["command"], paths.install, float(source.get("timeout", 30)))
        if res["exit"] != 0:
            return None, "version command exited %s: %s" % (res["exit"], res["stderr"][-300:])
        text = res["stdout"]
    m = re.search(pattern, text, re.MULTILINE)
    if not m:
        return None, "no version found by pattern %r" % pattern
    return (m.group(1) if m.groups() else m.group(0)).strip(), None


def read_version_member(paths, source):
    """The text of ``member`` inside the zip or jar archive ``file`` (read without starting any program)."""
    import io
    import zipfile

    data = read_beneath(paths.install, source["file"], "version file", 64 << 20)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            info = z.getinfo(source["member"])
            if info.file_size > 1 << 20:
                raise ValueError("%s in %s is larger than 1 MiB" % (source["member"], source["file"]))
            return z.read(info).decode("utf-8", "replace"), None
    except KeyError:
        return None, "%s holds no %s" % (source["file"], source["member"])
    except (zipfile.BadZipfile, ValueError, RuntimeError, EOFError) as e:
        return None, "%s is not a readable archive: %s" % (source["file"], e)


def same_version(a, b):
    """Two version strings name the same version (case, and trailing .0 levels, aside: 10.1.60.0 is 10.1.60)."""
    def norm(v):
        parts = str(v).strip().lower().split(".")
        while len(parts) > 1 and parts[-1] == "0":
            parts.pop()
        return parts
    return a is not None and b is not None and norm(a) == norm(b)


def check_installed_version(paths, source, target):
    """After the swap: the version the install now holds, read again, must be the target (else the run fails and
    the old version is put back)."""
    found, error = read_version(paths, source)
    if not same_version(found, target):
        raise AgentError("after the install the host reads version %s, not the target %s%s: the package did not put "
                         "the target in place" % (found, target, " (%s)" % error if error else ""),
                         "failed", found=found, target=target)
