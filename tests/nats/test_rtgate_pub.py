"""rtgate-pub reads the gateways' config file (--config), so that it picks
the same durable or ephemeral subject for a channel as the gateways do: a
publish to the other kind's subject is never delivered. It also takes
NATS_URL from the environment."""
import os

from conftest import FAST, pub_output, run_rtgate_pub
from rtclient import Client, run


def write_config(tmp_path, url=None):
    path = tmp_path / "rtgate.conf"
    lines = ["# the fleet's config, shared by the gateways and rtgate-pub",
             "ephemeral = typing.>", "ephemeral = presence.*"]
    if url:
        lines.append("nats = " + url)
    path.write_text("\n".join(lines) + "\n")
    return str(path)


async def subscribed_client(url, *channels):
    c = Client(url, "json", name="sub")
    await c.open()
    await c.connect()
    for ch in channels:
        r = await c.sub(ch)
        assert r["ok"], r
    return c


def test_the_config_decides_the_kind(nats, gateway, tmp_path):
    conf = write_config(tmp_path, nats.url)
    g = gateway("--config", conf, *FAST)

    async def go():
        c = await subscribed_client(g.url(), "typing.room1", "chat.room1")
        try:
            # Ephemeral under the file's patterns: no --ephemeral needed.
            out = pub_output(run_rtgate_pub(["--config", conf, "typing.room1", '{"t":1}']))
            assert out == {"dup": False}
            m = await c.next_event(("msg",), timeout=5)
            assert (m["channel"], m["data"]) == ("typing.room1", {"t": 1}) and "seq" not in m
            out = pub_output(run_rtgate_pub(["--config", conf, "chat.room1", '{"t":2}']))
            assert out["seq"] > 0 and out["dup"] is False
            m = await c.next_event(("msg",), timeout=5)
            assert (m["channel"], m["seq"]) == ("chat.room1", out["seq"])
            # A kind asked that the file contradicts: refused, nothing published.
            r = run_rtgate_pub(["--config", conf, "--durable", "typing.room1", '{"t":3}'])
            assert r.returncode == 2 and b"ephemeral" in r.stderr, r.stderr
            r = run_rtgate_pub(["--config", conf, "--ephemeral", "chat.room1", '{"t":4}'])
            assert r.returncode == 2 and b"durable" in r.stderr, r.stderr
            assert await c.quiet(0.5) == []
        finally:
            await c.close()

    run(go(), 60)


def test_nats_url_from_the_environment(nats, gateway, tmp_path):
    conf = write_config(tmp_path)  # no nats line: the URL comes from NATS_URL
    g = gateway("--nats", nats.url, "--config", conf, *FAST)
    env = dict(os.environ, NATS_URL=nats.url)

    async def go():
        c = await subscribed_client(g.url(), "presence.x")
        try:
            out = pub_output(run_rtgate_pub(["--config", conf, "presence.x", '"hi"'], env=env))
            assert out == {"dup": False}
            m = await c.next_event(("msg",), timeout=5)
            assert m["data"] == "hi"
            # --nats wins over NATS_URL.
            bad = dict(env, NATS_URL="nats://127.0.0.1:1")
            out = pub_output(run_rtgate_pub(["--nats", nats.url, "--config", conf, "presence.x",
                                             '"again"'], env=bad))
            m = await c.next_event(("msg",), timeout=5)
            assert m["data"] == "again"
        finally:
            await c.close()

    run(go(), 60)
    no_url = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    r = run_rtgate_pub(["--config", conf, "presence.x", '"x"'], env=no_url)
    assert r.returncode == 2 and b"NATS_URL" in r.stderr, r.stderr
    r = run_rtgate_pub(["--config", str(tmp_path / "missing.conf"), "x", '"x"'], env=env)
    assert r.returncode == 2 and b"missing.conf" in r.stderr, r.stderr
