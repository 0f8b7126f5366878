"""--static DIR: a folder served from memory on the gateway's listener
(gateway/static.c). Content types and cache headers, `/` -> index.html,
HEAD, 304, methods, traversal attempts in every encoding, NUL, dot-files,
symlinks out of DIR, the size bound at start, and a reader that never reads
while others are served."""
import os
import socket
import subprocess
import time

import pytest

from conftest import rtgate_bin, free_port

SECRET = b"TOP-SECRET-MARKER-6b1f"


def http(port, request, timeout=5.0):
    """Sends raw request bytes; returns (status, headers, body) of the answer
    (the request asks for Connection: close), or (None, {}, b"") if the
    connection was closed without one."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(request)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                headers = parse_headers(head)
                n = int(headers.get("content-length", "-1"))
                if n >= 0 and len(body) >= n:
                    break
    finally:
        s.close()
    if not data:
        return None, {}, b""
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, parse_headers(head), body


def parse_headers(head):
    out = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        out[k.strip().lower().decode()] = v.strip().decode("latin-1")
    return out


def get(port, path, method="GET", extra=b""):
    req = b"%s %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n" % (method.encode(), path, extra)
    return http(port, req)


@pytest.fixture
def site(tmp_path):
    """A folder to serve, with a secret file next to it (outside it)."""
    root = tmp_path / "site"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    files = {
        "index.html": b"<!doctype html><title>home</title>",
        "app.js": b"export const x = 1;\n",
        "style.css": b"body { color: red }\n",
        "img.png": bytes(range(256)) * 8,
        "icon.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        "data.json": b'{"a": 1}',
        "sub/index.html": b"<p>sub</p>",
        "big.bin": os.urandom(300 * 1024),
        ".hidden": SECRET,
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    os.symlink(tmp_path / "secret.txt", root / "link-out.txt")
    os.symlink(root / "app.js", root / "link-in.js")
    os.symlink(tmp_path, root / "dir-out")
    return root, files


def test_files_types_and_cache_headers(gateway, site):
    root, files = site
    g = gateway("--static", str(root))
    types = {"/": "text/html; charset=utf-8", "/app.js": "text/javascript; charset=utf-8",
             "/style.css": "text/css; charset=utf-8", "/img.png": "image/png",
             "/icon.svg": "image/svg+xml", "/data.json": "application/json",
             "/sub/": "text/html; charset=utf-8", "/big.bin": "application/octet-stream",
             "/link-in.js": "text/javascript; charset=utf-8"}
    bodies = {"/": files["index.html"], "/sub/": files["sub/index.html"],
              "/link-in.js": files["app.js"]}
    for path, ctype in types.items():
        status, h, body = get(g.port, path.encode())
        assert status == 200, path
        assert h["content-type"] == ctype, path
        assert body == bodies.get(path, files.get(path.lstrip("/"))), path
        assert int(h["content-length"]) == len(body)
        assert h["cache-control"] == "no-cache"
        assert h["etag"].startswith('"') and len(h["etag"]) == 18
        assert h["x-content-type-options"] == "nosniff"
    # Revalidation: the same ETag gets 304 without a body; another gets 200.
    _, h, _ = get(g.port, b"/app.js")
    status, h2, body = get(g.port, b"/app.js", extra=b"If-None-Match: %s\r\n" % h["etag"].encode())
    assert (status, body, h2["etag"]) == (304, b"", h["etag"])
    status, _, body = get(g.port, b"/app.js", extra=b'If-None-Match: "0000000000000000"\r\n')
    assert status == 200 and body == files["app.js"]
    # HEAD: the headers of GET, no body.
    status, h, body = get(g.port, b"/big.bin", method="HEAD")
    assert status == 200 and body == b"" and int(h["content-length"]) == 300 * 1024
    # The gateway's own endpoints still win.
    assert get(g.port, b"/healthz")[0] == 200


def test_keep_alive_serves_several_requests_on_one_connection(gateway, site):
    root, files = site
    g = gateway("--static", str(root))
    s = socket.create_connection(("127.0.0.1", g.port), timeout=5)
    try:
        for path, name in ((b"/app.js", "app.js"), (b"/big.bin", "big.bin"), (b"/style.css", "style.css")):
            s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
            data = b""
            while b"\r\n\r\n" not in data:
                data += s.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            n = int(parse_headers(head)["content-length"])
            while len(body) < n:
                body += s.recv(65536)
            assert body == files[name]
    finally:
        s.close()


@pytest.mark.parametrize("path", [
    b"/../secret.txt", b"/sub/../../secret.txt", b"/%2e%2e/secret.txt", b"/%2E%2E/secret.txt",
    b"/..%2fsecret.txt", b"/%2e%2e%2fsecret.txt", b"/sub/%2e%2e/%2e%2e/secret.txt",
    b"/..\\secret.txt", b"/%5c..%5csecret.txt", b"//secret.txt", b"/link-out.txt",
    b"/dir-out/secret.txt", b"/.hidden", b"/%2ehidden", b"/index.html%00.png", b"/%00x",
    b"/app.js%00", b"/sub", b"/nope", b"/" + b"a" * 300, b"/dir-out/", b"/%252e%252e/secret.txt",
])
def test_traversal_and_hidden_files_are_not_served(gateway, site, path):
    root, _ = site
    g = gateway("--static", str(root))
    status, _, body = get(g.port, path)
    assert SECRET not in body
    assert status in (None, 400, 403, 404), (path, status)
    assert get(g.port, b"/app.js")[0] == 200  # and the gateway is fine


def test_a_trailing_nul_is_dropped_by_the_parser_and_means_the_same_path(gateway, site):
    # lws's URI parser drops a NUL at the very end of the path (it seals the
    # string there): "/%00" reaches rtgate as "/". One in the middle is
    # refused (the test above).
    root, files = site
    g = gateway("--static", str(root))
    status, _, body = get(g.port, b"/%00")
    assert (status, body) == (200, files["index.html"])


def test_only_get_and_head(gateway, site):
    root, _ = site
    g = gateway("--static", str(root))
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        status, h, _ = get(g.port, b"/app.js", method=method,
                           extra=b"Content-Length: 0\r\n" if method in ("POST", "PUT", "PATCH") else b"")
        assert status in (None, 405, 400), (method, status)
        if status == 405:
            assert h["allow"] == "GET, HEAD"


def test_without_static_there_is_nothing_to_serve(gateway):
    g = gateway()
    assert get(g.port, b"/")[0] == 404
    assert get(g.port, b"/index.html")[0] == 404


def start_failure(tmp_path, *flags):
    port = free_port()
    p = subprocess.run([rtgate_bin(), "--listen", "127.0.0.1:%d" % port] + list(flags),
                       capture_output=True, timeout=30)
    return p.returncode, (p.stdout + p.stderr).decode("utf-8", "replace")


def test_a_folder_over_the_size_bound_refuses_to_start(tmp_path, site):
    root, _ = site
    rc, log = start_failure(tmp_path, "--static", str(root), "--static-max-bytes", "100000")
    assert rc != 0
    assert "event=static_too_big" in log and "static-max-bytes" in log


def test_a_missing_folder_refuses_to_start(tmp_path):
    rc, log = start_failure(tmp_path, "--static", str(tmp_path / "nope"))
    assert rc != 0
    assert "event=static_unreadable" in log


def test_a_reader_that_never_reads_does_not_hold_up_others(gateway, tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    big = os.urandom(8 * 1024 * 1024)
    (root / "big.bin").write_bytes(big)
    g = gateway("--static", str(root))
    stalled = []
    for _ in range(4):  # ask for 8 MiB and never read it
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", g.port))
        s.sendall(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        stalled.append(s)
    time.sleep(0.3)
    t0 = time.monotonic()
    status, _, body = get(g.port, b"/big.bin")
    assert status == 200 and body == big
    assert get(g.port, b"/healthz")[0] == 200
    assert time.monotonic() - t0 < 10
    for s in stalled:
        s.close()
