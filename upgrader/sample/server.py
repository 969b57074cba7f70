"""sample-middleware: the small HTTP service of the sample product.

This file is copied verbatim into every sample install as ``lib/server.py`` and run there by
``bin/start.sh`` with whatever ``python3`` the host has (3.8 or newer), so it uses the standard
library only and never imports anything from upgrader.

What it does: reads ``conf/server.conf`` and ``lib/VERSION`` (and ``lib/FAULT`` when a build is
deliberately broken), listens on exactly the configured ``bind:port``, answers ``/version``,
``/health`` and ``/``, writes ``run/server.pid`` once it listens, appends to
``logs/server.log``, and on SIGTERM/SIGINT stops cleanly and removes its pid file.

What it does not do: daemonize itself (``start.sh`` detaches it), write anything under
``data/``, rotate logs, or read any configuration other than ``conf/server.conf``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TextIO

PRODUCT = "sample-middleware"
HOME = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONF_PATH = os.path.join(HOME, "conf", "server.conf")
VERSION_PATH = os.path.join(HOME, "lib", "VERSION")
FAULT_PATH = os.path.join(HOME, "lib", "FAULT")
LOG_PATH = os.path.join(HOME, "logs", "server.log")
PID_PATH = os.path.join(HOME, "run", "server.pid")


class Log:
    """Appends ``<local time> LEVEL message`` lines to the log file, flushing each one."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._file: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for life
        except OSError as e:
            sys.stderr.write(f"cannot open log {path} ({e}); logging to stderr\n")
            self._file = sys.stderr

    def write(self, level: str, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {level} {message}\n"
        with self._lock:
            self._file.write(line)
            self._file.flush()


class ConfigError(Exception):
    pass


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def read_conf(path: str) -> dict:
    """Parse ``key = value`` lines; ``#`` starts a comment line. Returns the checked settings."""
    text = read_text(path)
    if text is None:
        raise ConfigError(f"configuration file {path} not found")
    values = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{path} line {number}: expected 'key = value', got {line!r}")
        values[key.strip().lower()] = value.strip()
    if "port" not in values:
        raise ConfigError(f"{path}: 'port' is required")
    try:
        port = int(values["port"])
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise ConfigError(f"{path}: port must be a number from 1 to 65535, got {values['port']!r}")
    return {
        "port": port,
        "bind": values.get("bind") or "127.0.0.1",
        "greeting": values.get("greeting") or f"Welcome to {PRODUCT}",
        "admin_password": values.get("admin_password", ""),
    }


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # Skip HTTPServer's socket.getfqdn() reverse lookup: it can stall startup for seconds.
        import socketserver

        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = port


def make_handler(version: str, greeting: str, fault: str | None, log: Log) -> type:
    class Handler(BaseHTTPRequestHandler):
        server_version = f"{PRODUCT}/{version}"
        sys_version = ""

        def log_message(self, format: str, *args: object) -> None:
            pass  # no access log on stderr

        def _send(self, status: int, content_type: str, body: str) -> None:
            data = body.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/version":
                self._send(200, "text/plain; charset=utf-8", version)
            elif path == "/health":
                if fault == "unhealthy":
                    log.write("ERROR", "health check failed: backend pool exhausted")
                    self._send(503, "application/json", json.dumps({"status": "degraded"}))
                else:
                    self._send(200, "application/json", json.dumps({"status": "ok", "version": version}))
            elif path == "/":
                self._send(200, "text/plain; charset=utf-8", f"{greeting}\n{PRODUCT} {version}\n")
            else:
                self._send(404, "text/plain; charset=utf-8", f"not found: {path}\n")

    return Handler


def crash_delay(fault: str | None) -> float | None:
    if not fault or not fault.startswith("crash-after:"):
        return None
    try:
        return max(0.0, float(fault.split(":", 1)[1]))
    except ValueError:
        return None


def remove_pid_file() -> None:
    try:
        with open(PID_PATH, encoding="utf-8") as f:
            if f.read().strip() != str(os.getpid()):
                return
        os.unlink(PID_PATH)
    except OSError:
        pass


def write_pid_file() -> None:
    os.makedirs(os.path.dirname(PID_PATH), exist_ok=True)
    tmp = f"{PID_PATH}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, PID_PATH)


class State:
    """What the signal handler needs: the server once bound, and whether a stop was asked for."""

    def __init__(self) -> None:
        self.server: Server | None = None
        self.stopping = False


def main() -> int:
    log = Log(LOG_PATH)
    version = read_text(VERSION_PATH) or "unknown"
    fault = read_text(FAULT_PATH) or None
    state = State()

    def on_signal(signum: int, frame: object) -> None:
        if state.stopping:
            return
        state.stopping = True
        log.write("INFO", "stopping")
        server = state.server
        if server is None:
            raise SystemExit(0)
        # shutdown() waits for serve_forever() to return, so it must not run on this (main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    try:
        conf = read_conf(CONF_PATH)
    except (ConfigError, OSError, UnicodeDecodeError) as e:
        log.write("ERROR", f"cannot start: {e}")
        return 1
    if fault == "no-start":
        log.write("ERROR", "cannot start: configuration rejected (unknown attribute 'seesion-manager')")
        return 1
    if fault and fault != "unhealthy" and crash_delay(fault) is None:
        log.write("WARNING", f"ignoring unknown fault {fault!r} in lib/FAULT")

    bind, port = conf["bind"], conf["port"]
    if ":" in bind:
        Server.address_family = socket.AF_INET6
    handler = make_handler(version, conf["greeting"], fault, log)
    try:
        server = Server((bind, port), handler)
    except OSError as e:
        log.write("ERROR", f"cannot start: cannot listen on {bind}:{port} ({e.strerror or e})")
        return 1
    state.server = server
    try:
        write_pid_file()
        log.write("INFO", f"{PRODUCT} {version} started on {bind}:{port} pid {os.getpid()}")
        delay = crash_delay(fault)
        if delay is not None:
            def crash() -> None:
                log.write("ERROR", "fatal: out of memory")
                os._exit(3)

            timer = threading.Timer(delay, crash)
            timer.daemon = True
            timer.start()
        if not state.stopping:
            server.serve_forever(poll_interval=0.1)
    finally:
        server.server_close()
        remove_pid_file()
    log.write("INFO", "stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
