"""The Origin allow-list at the WebSocket handshake (--allow-origin):
browsers' Origins are matched exactly after normalisation, a disallowed one
gets 403 and no upgrade, requests without Origin are non-browser clients and
pass, and no list means any Origin."""
from edgekit import SMALL_ASAN, STREAM_FLAGS, attack_checked, handshake

ALLOWED = ("--allow-origin", "https://app.example.com,http://localhost:8080",
           "--allow-origin", "HTTPS://Other.Example:443/")


def status_for(g, origin):
    headers = {"Origin": origin} if origin is not None else {}
    status, _, body, s = handshake(g.port, headers)
    s.close()
    return status, body


def test_disallowed_origins_get_403_and_allowed_ones_upgrade(gateway):
    g = gateway(*ALLOWED)
    cases = [
        (None, 101),                                   # not a browser
        ("https://app.example.com", 101),
        ("https://app.example.com:443", 101),          # default port
        ("https://APP.Example.com", 101),              # case
        ("https://other.example", 101),                # configured with case, port, slash
        ("http://localhost:8080", 101),
        ("http://localhost:8081", 403),
        ("http://app.example.com", 403),               # scheme matters
        ("https://app.example.com.evil.example", 403),
        ("https://evil.example", 403),
        ("null", 403),                                 # sandboxed frames, file://
        ("https://app.example.com/path", 403),         # not an origin at all
        ("", 101),  # lws cannot tell an empty header from none: not a browser either way
    ]
    refused = 0
    for origin, want in cases:
        status, body = status_for(g, origin)
        assert status == want, (origin, status, body)
        if want == 403:
            refused += 1
            assert body == b"origin not allowed\n"
    m = g.metrics()
    assert m['rtgate_handshakes_refused_total{cause="origin"}'] == refused
    assert "status=403" in g.log() and 'why="origin not allowed"' in g.log()


def test_without_allow_origin_any_origin_upgrades(gateway):
    g = gateway()
    for origin in ("https://evil.example", "null", "garbage"):
        status, body = status_for(g, origin)
        assert status == 101, (origin, status, body)


def test_a_flood_of_disallowed_origins_leaves_other_clients_flowing(gateway):
    g = gateway(*ALLOWED, *STREAM_FLAGS, env=SMALL_ASAN)

    def attack():
        for i in range(800):
            status, _ = status_for(g, "https://evil%d.example" % i)
            assert status == 403

    attack_checked(g, attack, "800 handshakes with a disallowed Origin")
    # The refusals took no per-address handshake tokens: a legitimate client
    # from the same address still gets in.
    assert status_for(g, "https://app.example.com")[0] == 101
