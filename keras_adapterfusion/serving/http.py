"""The HTTP transport of the serving client: one POST with a deadline over the whole request.

`post(url, body, timeout)` connects (through an `http(s)_proxy` when the
environment names one, with a CONNECT tunnel for HTTPS), sends the JSON body and
reads the full reply, all within `timeout` seconds; `json_reply` decodes the
reply. Every failure of the server, or of the way to it, is a `ServingError`
that names the URL and the stage that failed.
"""

import base64
import http.client
import io
import json
import math
import numbers
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request

from keras_adapterfusion.errors import ServingError

_CHUNK = 64 * 1024  # bytes read from the server per call
_HTTP_DETAIL = 500  # characters of an HTTP error body quoted in the message
_SNIPPET = 100  # characters of a non-JSON body quoted in the message


class _Deadline:
    """The time left of a request; `TimeoutError` once it is spent."""

    def __init__(self, timeout):
        self.end = time.monotonic() + timeout

    def left(self):
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        return left


class _DeadlineSocket:
    """A connected socket whose every send and receive is bounded by what is left of a deadline.

    `http.client` only calls `sendall`, `makefile` and `close` on its socket; the
    socket timeout is set to the time left before each of them, so a server that
    answers one byte at a time cannot stretch the request past the deadline.
    """

    def __init__(self, sock, deadline):
        self.sock = sock
        self.deadline = deadline

    def sendall(self, data):
        view = memoryview(data).cast("B")
        while view:  # send by send, as an SSL socket's sendall applies its timeout to each piece
            self.sock.settimeout(self.deadline.left())
            view = view[self.sock.send(view):]

    def recv_into(self, buffer):
        self.sock.settimeout(self.deadline.left())
        return self.sock.recv_into(buffer)

    def makefile(self, mode="rb", *args, **kwargs):
        if mode != "rb":
            raise ValueError(f"serving: unsupported socket file mode {mode!r}")
        return io.BufferedReader(_DeadlineReader(self), _CHUNK)

    def close(self):
        pass  # the socket belongs to `_post`, which closes it once the whole reply is read


class _DeadlineReader(io.RawIOBase):
    def __init__(self, sock):
        super().__init__()
        self._sock = sock

    def readable(self):
        return True

    def readinto(self, buffer):
        return self._sock.recv_into(buffer)


def _resolve(host, port, deadline):
    """`getaddrinfo` for `host`, bounded by the deadline (a name lookup has no socket timeout)."""
    try:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        pass  # not an address literal: look the name up
    result = {}

    def lookup():
        try:
            result["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except Exception as e:  # handed to the caller's thread
            result["error"] = e

    thread = threading.Thread(target=lookup, name=f"serving-resolve-{host}", daemon=True)
    thread.start()
    thread.join(deadline.left())
    if thread.is_alive():
        raise TimeoutError(f"looking up {host}")
    if "error" in result:
        raise result["error"]
    return result["addresses"]


def _connect(host, port, deadline):
    """A TCP socket connected to `host`:`port` (each address in turn) before the deadline."""
    error = OSError(f"no address for {host}")
    for family, kind, proto, _, address in _resolve(host, port, deadline):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(deadline.left())
            sock.connect(address)
            return sock
        except OSError as e:  # TimeoutError included: try the next address while time is left
            sock.close()
            error = e
    raise error


def _proxy(scheme, netloc):
    """The `(host, port, headers)` of the environment's proxy for `scheme`://`netloc`, or None.

    Honours `http_proxy`, `https_proxy` and `no_proxy` as `urllib` does (which this
    client used before); only plain-HTTP proxies are supported.
    """
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(netloc):
        return None
    parsed = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if parsed.scheme != "http" or not parsed.hostname:
        raise ServingError(f"serving: the {scheme}_proxy setting {proxy!r} is not supported; expected "
                           "http://host:port (or set no_proxy for the model server).")
    headers = {}
    if parsed.username is not None:
        user = urllib.parse.unquote(parsed.username)
        password = urllib.parse.unquote(parsed.password or "")
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return parsed.hostname, parsed.port or 80, headers


def _tunnel(sock, netloc, headers, deadline):
    """Ask the HTTP proxy behind `sock` for a CONNECT tunnel to `netloc`."""
    lines = [f"CONNECT {netloc} HTTP/1.1", f"Host: {netloc}", *(f"{k}: {v}" for k, v in headers.items())]
    wrapped = _DeadlineSocket(sock, deadline)
    wrapped.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    reply = bytearray()
    buffer = bytearray(4096)
    while b"\r\n\r\n" not in reply:  # the proxy sends nothing after its header until we speak TLS
        n = wrapped.recv_into(buffer)
        if not n:
            break
        reply += buffer[:n]
        if len(reply) > 65536:
            break
    status = bytes(reply).split(b"\r\n", 1)[0].decode("latin-1", errors="replace")
    parts = status.split()
    if len(parts) < 2 or parts[1] != "200":
        raise ConnectionError(f"the proxy refused to tunnel to {netloc}: {status or 'no answer'!r}")


def post(url, body, timeout):
    """POST the JSON `body` to `url`; `(status, content_type, data)`, the whole exchange within `timeout` s.

    Raises:
        ValueError: `url` is not an http(s) URL, or holds characters HTTP does not allow.
        ServingError: the server cannot be reached, timed out, or sent a malformed HTTP reply.
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        host, port = parts.hostname, parts.port
    except ValueError as e:  # a port that is not a number
        raise ValueError(f"serving: server URL {url!r}: {e}; expected http(s)://host:port.") from e
    if scheme not in ("http", "https") or not host:
        raise ValueError(f"serving: server URL {url!r}; expected http://host:port or https://host:port.")
    port = port or (443 if scheme == "https" else 80)
    netloc = parts.netloc.rpartition("@")[2]
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {"Content-Type": "application/json", "Accept": "application/json", "Connection": "close"}

    deadline = _Deadline(timeout)
    sock = None
    stage = "connecting"
    try:
        proxy = _proxy(scheme, netloc)
        if proxy is None:
            sock = _connect(host, port, deadline)
        else:
            proxy_host, proxy_port, proxy_headers = proxy
            sock = _connect(proxy_host, proxy_port, deadline)
            if scheme == "https":
                _tunnel(sock, f"{host}:{port}" if ":" not in host else f"[{host}]:{port}", proxy_headers, deadline)
            else:
                path = f"http://{netloc}{path}"  # absolute form, for the proxy
                headers.update(proxy_headers)
        if scheme == "https":
            sock.settimeout(deadline.left())
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        stage = "sending the request"
        connection = http.client.HTTPConnection(host, port)
        connection.sock = _DeadlineSocket(sock, deadline)  # already connected: http.client never connects itself
        connection.request("POST", path, body=body, headers=headers)
        stage = "reading the reply"
        reply = connection.getresponse()
        chunks = []
        while True:
            chunk = reply.read(_CHUNK)
            if not chunk:
                break
            chunks.append(chunk)
            deadline.left()
        if reply.length:  # read(amt) returns what came before the server hung up, without complaint
            raise http.client.IncompleteRead(b"".join(chunks), reply.length)
        return reply.status, reply.getheader("Content-Type", ""), b"".join(chunks)
    except TimeoutError as e:
        raise ServingError(f"serving: {url} timed out: no complete reply within timeout={timeout} s "
                           f"(it was {stage}).") from e
    except http.client.InvalidURL as e:  # the URL's path or host holds characters HTTP does not allow
        raise ValueError(f"serving: server URL {url!r}: {e}.") from e
    except http.client.HTTPException as e:  # RemoteDisconnected, BadStatusLine, IncompleteRead, LineTooLong...
        raise ServingError(f"serving: {url} sent no valid HTTP reply ({type(e).__name__}: {e}).") from e
    except OSError as e:
        if stage == "connecting":
            raise ServingError(f"serving: cannot reach {url} ({e}).") from e
        raise ServingError(f"serving: the connection to {url} failed while {stage} ({e}).") from e
    finally:
        if sock is not None:
            sock.close()


def check_timeout(timeout):
    """`timeout` as a float of seconds; `ValueError` unless it is a finite number > 0."""
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not math.isfinite(timeout) \
            or timeout <= 0:
        raise ValueError(f"serving: timeout={timeout!r}; expected a finite number of seconds > 0.")
    return float(timeout)


def json_reply(url, status, content_type, data):
    """The decoded JSON of a reply; `ServingError` for HTTP errors and bodies that are not JSON."""
    if not 200 <= status < 300:
        detail = data.decode("utf-8", errors="replace")[:_HTTP_DETAIL]
        raise ServingError(f"serving: {url} answered HTTP {status}: {detail}")
    try:
        if not data.strip():
            raise ValueError("the body is empty")
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError
        text = data.decode("utf-8", errors="replace")
        snippet = text[:_SNIPPET] + ("..." if len(text) > _SNIPPET else "")
        raise ServingError(f"serving: {url} answered HTTP {status} (Content-Type {content_type or 'none'!r}) "
                           f"with a body that is not JSON ({e}): {snippet!r}") from e
