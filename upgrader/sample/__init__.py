"""sample-middleware: a real, small middleware product for the demo, the tests and the benchmarks.

An install has the shape of a Java application server's install dir (``bin/``, ``lib/``,
``conf/``, ``docs/``, ``data/``, ``logs/``, ``run/``) and runs as a real background process on a
loopback port (``lib/server.py``, started by ``bin/start.sh``). ``RELEASES`` is its release
line, including deliberately faulty builds, and ``build_packages`` turns it into packages and a
catalog the tool can upgrade from.

This package does not upgrade anything itself and has no knowledge of hosts or transports: it
only writes files, and ``http_get`` asks a local install for its version or health.
"""

from __future__ import annotations

from .packages import RELEASES, SampleRelease, build_packages, package_name
from .tree import (
    DEFAULT_PORT,
    INSTALLED_FIRST,
    PRODUCT,
    install,
    write_patch_tree,
    write_tree,
)

__all__ = [
    "DEFAULT_PORT",
    "INSTALLED_FIRST",
    "PRODUCT",
    "RELEASES",
    "SampleRelease",
    "build_packages",
    "http_get",
    "install",
    "package_name",
    "write_patch_tree",
    "write_tree",
]


def http_get(port: int, path: str = "/version", timeout: float = 2.0) -> tuple[int, str]:
    """GET ``http://127.0.0.1:<port><path>`` and return ``(status, body)``.

    Raises OSError when nothing answers (refused, timed out, or not speaking HTTP).
    """
    import http.client

    if not path.startswith("/"):
        path = "/" + path
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", errors="replace")
    except http.client.HTTPException as e:
        raise OSError(f"no valid HTTP answer from 127.0.0.1:{port}{path}: {e!r}") from e
    finally:
        conn.close()
