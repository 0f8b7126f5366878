/*
 * The client library (clients/js/rtgate.js) against the real rtgate binary
 * on the memory engine: delivery, acks, dedup, resume, gaps, resets,
 * publishes retried across reconnects, rate limits, the server's
 * disconnect.after_ms, backoff across a refused handshake, getToken, bounds
 * and presence.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Client, RtgateError } from '../../clients/js/rtgate.js';
import { Gateway, TRANSPORT, TcpProxy, freePort, recordEvents, sleep, waitFor, transportOptions } from './lib/harness.mjs';

const TRANSPORT_OPTIONS = await transportOptions(); /* WebSocket, or none: SSE / long-polling */
const FAST = ['--pub-rate', 100000, '--pub-burst', 100000, '--msg-rate', 100000, '--msg-burst', 100000];
const QUICK_STOP = ['--drain-ms', 100, '--drain-timeout-ms', 3000];

function client(url, options = {}) {
    return new Client(url, { ...TRANSPORT_OPTIONS, minReconnectDelayMs: 50, maxReconnectDelayMs: 1000, ...options });
}

/* Runs body with a started gateway; stops and checks it afterwards. */
async function withGateway(flags, body) {
    const gw = await new Gateway([...QUICK_STOP, ...flags]).start();
    const clients = [];
    try {
        await body(gw, (url, opt) => {
            const c = client(url, opt);
            clients.push(c);
            return c;
        });
    } finally {
        for (const c of clients) c.close();
        await gw.stop();
    }
}

test('publish, subscribe and ack: each message once, in order, a repeated msg_id answered dup', () =>
    withGateway(FAST, async (gw, mk) => {
        const a = mk(gw.url);
        const got = [];
        const told = a.once('transport');
        await a.connect();
        assert.equal(a.transport, TRANSPORT, 'the transport in use, as a property');
        assert.deepEqual(await told, { transport: TRANSPORT, previous: null }, 'and as an event');
        const sub = await a.subscribe('chat.basic', (data, info) => got.push({ data, info }));
        assert.equal(sub.durable, true);
        const replies = [];
        for (let i = 0; i < 5; i++) replies.push(await a.publish('chat.basic', { i }));
        const first = await a.publish('chat.basic', { again: true }, { msgId: 'same-id' });
        const repeat = await a.publish('chat.basic', { again: true }, { msgId: 'same-id' });
        assert.deepEqual(replies.map((r) => r.seq), [1, 2, 3, 4, 5]);
        assert.equal(first.dup, false);
        assert.equal(repeat.dup, true);
        assert.equal(repeat.seq, first.seq);
        await waitFor(() => got.length === 6, { what: '6 deliveries' });
        await sleep(100);
        assert.equal(got.length, 6, 'the repeated msg_id is not delivered twice');
        assert.deepEqual(got.map((g) => g.info.seq), [1, 2, 3, 4, 5, 6]);
        assert.deepEqual(got[2].data, { i: 2 });
        assert.equal(got[5].info.msgId, 'same-id');
        assert.equal(got[5].info.channel, 'chat.basic');
        assert.deepEqual(sub.position, { since: 6, epoch: sub.position.epoch });
    }));

test('an async handler is awaited: messages one at a time, acked after it returns (the window moves)', () =>
    withGateway([...FAST, '--max-unacked', 4], async (gw, mk) => {
        const sub = mk(gw.url);
        const pub = mk(gw.url);
        let release;
        const gate = new Promise((r) => (release = r));
        let running = 0,
            maxRunning = 0;
        const seqs = [];
        await sub.subscribe('work.q', async (data, info) => {
            running++;
            maxRunning = Math.max(maxRunning, running);
            await gate;
            seqs.push(info.seq);
            running--;
        });
        for (let i = 0; i < 12; i++) await pub.publish('work.q', { i });
        await sleep(300);
        assert.equal(seqs.length, 0, 'the first handler has not returned yet');
        release();
        /* 12 messages through a window of 4: only acks sent after each
         * handler returned let the rest come. */
        await waitFor(() => seqs.length === 12, { what: '12 handled' });
        assert.equal(maxRunning, 1);
        assert.deepEqual(seqs, [...Array(12).keys()].map((i) => i + 1));
    }));

test('a subscriber that falls behind the history gets the gap surfaced, then the rest', () =>
    withGateway([...FAST, '--max-unacked', 2, '--history', 5], async (gw, mk) => {
        const sub = mk(gw.url);
        const pub = mk(gw.url);
        let release;
        const gate = new Promise((r) => (release = r));
        const seqs = [];
        const gaps = [];
        const events = recordEvents(sub, ['gap']);
        await sub.subscribe(
            'feed.gappy',
            async (data, info) => {
                await gate;
                seqs.push(info.seq);
            },
            { onGap: (g) => gaps.push(g) },
        );
        for (let i = 0; i < 20; i++) await pub.publish('feed.gappy', { i });
        release();
        await waitFor(() => seqs.at(-1) === 20, { what: 'the last message' });
        assert.ok(gaps.length >= 1, 'a gap was reported');
        assert.equal(events.length, gaps.length, "the client's gap event matches the callback");
        for (const g of gaps) assert.ok(g.from <= g.to && g.channel === 'feed.gappy');
        const missing = gaps.reduce((n, g) => n + g.to - g.from + 1, 0);
        assert.equal(seqs.length + missing, 20, 'every seq is either delivered or inside a gap');
        assert.deepEqual([...seqs].sort((x, y) => x - y), seqs, 'in order');
        assert.equal(new Set(seqs).size, seqs.length, 'no duplicate');
    }));

test('a network cut: the subscriber resumes with since/epoch and gets what was sent meanwhile, once, in order', async () => {
    await withGateway(FAST, async (gw, mk) => {
        const proxy = await new TcpProxy(gw.port).listen();
        try {
            const sub = mk(proxy.url);
            const pub = mk(gw.url);
            const got = [];
            const events = recordEvents(sub, ['reset', 'disconnected', 'connected']);
            await sub.subscribe('chat.cut', (d) => got.push(d.i));
            for (let i = 0; i < 10; i++) await pub.publish('chat.cut', { i });
            await waitFor(() => got.length === 10, { what: 'first 10' });
            proxy.cutAll();
            for (let i = 10; i < 30; i++) await pub.publish('chat.cut', { i });
            await waitFor(() => events.filter((e) => e.type === 'connected').length >= 1 && sub.state === 'connected', {
                what: 'reconnect',
            });
            for (let i = 30; i < 40; i++) await pub.publish('chat.cut', { i });
            await waitFor(() => got.length >= 40, { what: '40 messages' });
            await sleep(100);
            assert.deepEqual(got, [...Array(40).keys()]);
            assert.equal(events.filter((e) => e.type === 'reset').length, 0, 'recovered, no reset');
            if (TRANSPORT === 'longpoll') {
                /* a cut loses a poll, not the session: the batch it carried is answered again */
                assert.equal(sub.stats.connects, 1, 'the same session throughout');
            } else {
                assert.ok(events.some((e) => e.type === 'disconnected' && e.detail.willReconnect));
                assert.ok(sub.stats.connects >= 2);
            }
        } finally {
            await proxy.close();
        }
    });
});

test('a stuck handler across reconnects: nothing piles up, nothing is lost or repeated', () =>
    withGateway([...FAST, '--max-unacked', 4], async (gw, mk) => {
        const proxy = await new TcpProxy(gw.port).listen();
        try {
            const sub = mk(proxy.url);
            const pub = mk(gw.url);
            let release;
            const gate = new Promise((r) => (release = r));
            const seqs = [];
            await sub.subscribe('stuck.chan', async (d, info) => {
                await gate;
                seqs.push(info.seq);
            });
            for (let round = 0; round < 3; round++) {
                for (let i = 0; i < 10; i++) await pub.publish('stuck.chan', { round, i });
                await sleep(100);
                proxy.cutAll();
                /* (long-polling: a cut loses a poll, not the session) */
                const connects = TRANSPORT === 'longpoll' ? 1 : round + 2;
                await waitFor(() => sub.state === 'connected' && sub.stats.connects === connects, { what: 'reconnect' });
            }
            await waitFor(() => sub.buffered >= 3, { what: 'the window refilled' });
            await sleep(200);
            assert.ok(sub.buffered <= 4, `${sub.buffered} waiting: at most the window of 4, not one per reconnect`);
            release();
            await waitFor(() => seqs.length >= 30, { what: '30 handled' });
            await sleep(200);
            assert.deepEqual(seqs, [...Array(30).keys()].map((i) => i + 1));
        } finally {
            await proxy.close();
        }
    }));

test('a memory-engine restart loses the history: recovered:false is surfaced, replayOnReset reads the new one', () =>
    withGateway(FAST, async (gw, mk) => {
        const sub = mk(gw.url);
        const pub = mk(gw.url);
        const got = [];
        const resets = [];
        await sub.subscribe('chat.restart', (d) => got.push(d.i), { replayOnReset: true, onReset: (r) => resets.push(r) });
        await pub.publish('chat.restart', { i: 'before' });
        await waitFor(() => got.length === 1, { what: 'first message' });
        await gw.sigkill();
        /* published while the gateway is down: sent once it is back */
        const during = [0, 1, 2].map((i) => pub.publish('chat.restart', { i }));
        await sleep(200);
        await gw.restart();
        const replies = await Promise.all(during);
        assert.deepEqual(replies.map((r) => r.seq), [1, 2, 3], 'the queued publishes, in order, in the new epoch');
        await waitFor(() => got.length === 4, { what: 'the three sent meanwhile' });
        await sleep(200);
        assert.deepEqual(got, ['before', 0, 1, 2]);
        assert.equal(resets.length, 1);
        assert.equal(resets[0].reason, 'not_recovered');
        assert.equal(resets[0].channel, 'chat.restart');
    }));

test('429: a publish waits retry_after_ms and is retried with its msg_id; nothing is stored twice', () =>
    withGateway(['--msg-rate', 4, '--msg-burst', 4, '--pub-rate', 1000, '--pub-burst', 1000], async (gw, mk) => {
        const pub = mk(gw.url);
        await pub.connect();
        const replies = await Promise.all([...Array(10).keys()].map((i) => pub.publish('rl.chan', { i })));
        assert.ok(pub.stats.rateLimited > 0, 'the server refused some with 429');
        assert.deepEqual(
            replies.map((r) => r.seq).sort((x, y) => x - y),
            [...Array(10).keys()].map((i) => i + 1),
            'ten distinct seqs: each publish stored once',
        );
        assert.ok(replies.every((r) => r.dup === false));
        const reader = mk(gw.url, {});
        const seen = [];
        await reader.subscribe('rl.chan', (d, info) => seen.push([info.seq, d.i]), { history: true });
        await waitFor(() => seen.length === 10, { what: 'history of 10' });
        await sleep(100);
        assert.equal(seen.length, 10, 'the channel holds exactly the ten');
        for (const [seq, i] of seen) assert.equal(replies[i].seq, seq, 'each reply names its own message');
    }));

test('publishes are paced to the pub_rate the server announced: no 429 at all', () =>
    withGateway(['--pub-rate', 10, '--pub-burst', 3], async (gw, mk) => {
        const pub = mk(gw.url);
        await pub.connect();
        const t0 = Date.now();
        await Promise.all([...Array(8).keys()].map((i) => pub.publish('paced.chan', { i })));
        const elapsed = Date.now() - t0;
        assert.equal(pub.stats.rateLimited, 0);
        assert.ok(elapsed >= 400, `8 publishes at 10/s after a burst of 3 took ${elapsed} ms`);
    }));

test("the server's disconnect.after_ms is honoured before reconnecting", () =>
    withGateway(['--abuse-limit', 2, '--abuse-block-ms', 1500], async (gw, mk) => {
        const c = mk(gw.url);
        const events = recordEvents(c, ['server-disconnect', 'connecting', 'connected']);
        await c.connect();
        const refused = await Promise.allSettled([1, 2, 3].map((i) => c.subscribe('bad channel ' + i, () => {})));
        assert.ok(refused.every((r) => r.status === 'rejected' && r.reason.code === 400));
        await waitFor(() => events.filter((e) => e.type === 'connected').length === 2, { what: 'reconnect', timeoutMs: 20000 });
        const told = events.find((e) => e.type === 'server-disconnect');
        assert.ok(told, 'the server said disconnect');
        assert.equal(told.detail.code, 1008);
        assert.equal(told.detail.after_ms, 1500);
        const retry = events.filter((e) => e.type === 'connecting').at(-1);
        assert.ok(retry.at - told.at >= 1500 - 20, `reconnected ${retry.at - told.at} ms after being told 1500`);
    }));

test('a refused handshake (gateway down) counts as a lost connection: backoff, then connected when it comes up', async () => {
    const gw = new Gateway(QUICK_STOP);
    gw.port = await freePort();
    const tokens = [];
    let calls = 0;
    const c = client(gw.url, {
        getToken: async () => {
            calls++;
            tokens.push('t' + calls);
            return 't' + calls;
        },
    });
    const events = recordEvents(c, ['connecting', 'disconnected']);
    try {
        const connected = c.connect();
        await waitFor(() => events.filter((e) => e.type === 'disconnected').length >= 3, { what: '3 failed attempts' });
        for (const e of events.filter((x) => x.type === 'disconnected')) {
            assert.equal(e.detail.willReconnect, true);
            assert.ok(e.detail.delayMs >= 0 && e.detail.delayMs <= 1000, 'full jitter under the cap');
        }
        await gw.restart();
        await connected;
        assert.equal(c.state, 'connected');
        assert.equal(calls, events.filter((e) => e.type === 'connecting').length, 'getToken is called on each connect');
        /* and again after the gateway restarts */
        const before = calls;
        await gw.sigkill();
        await gw.restart();
        await waitFor(() => c.state === 'connected' && calls > before, { what: 'reconnect with a new token' });
    } finally {
        c.close();
        await gw.stop();
    }
});

test('bounded: requests past maxPending are refused at once; a message over max_message_bytes is refused locally', async () => {
    const c = client('ws://127.0.0.1:9/ws', { maxPending: 5, reconnect: false });
    const ok = [...Array(5).keys()].map((i) => c.publish('x.y', { i }));
    await assert.rejects(c.publish('x.y', { i: 5 }), (e) => e instanceof RtgateError && e.reason === 'queue_full');
    await assert.rejects(c.publish('x.y', 'x'.repeat(70000)), (e) => e.code === 413);
    c.close();
    const settled = await Promise.allSettled(ok);
    assert.ok(settled.every((s) => s.status === 'rejected' && s.reason.reason === 'closed'));
});

test('presence: geoSet, near, and a watch that sees join/move/leave and survives a gateway restart', () =>
    withGateway(FAST, async (gw, mk) => {
        const a = mk(gw.url);
        const b = mk(gw.url);
        const events = [];
        await a.geoSet('riders', { lat: 52.52, lon: 13.405, meta: { name: 'a' } });
        const w = await a.watch('riders', { lat: 52.52, lon: 13.405, radius_m: 1000 }, (ev, m) => events.push([ev, m.meta?.name]));
        await b.connect();
        await b.geoSet('riders', { lat: 52.521, lon: 13.405, meta: { name: 'b' } });
        await waitFor(() => events.some(([ev, n]) => ev === 'join' && n === 'b'), { what: 'b joins' });
        const near = await a.near('riders', { lat: 52.52, lon: 13.405, radius_m: 500 });
        assert.deepEqual(near.members.map((m) => m.meta.name), ['a', 'b']);
        await b.geoSet('riders', { lat: 52.5211, lon: 13.405, meta: { name: 'b' } });
        await waitFor(() => events.some(([ev, n]) => ev === 'move' && n === 'b'), { what: 'b moves' });
        const connects = [a.stats.connects, b.stats.connects];
        await gw.sigkill();
        await gw.restart();
        /* b's presence and a's watch come back by themselves; b has a new client id (both
         * sessions are new: a long-poll client notices the restart only at its next poll) */
        await waitFor(() => a.stats.connects > connects[0] && b.stats.connects > connects[1] &&
            [...w.members.values()].filter((m) => m.meta?.name === 'b').length === 1 && a.state === 'connected' &&
            [...w.members.values()].some((m) => m.client === b.session?.client), { what: 'b back in the watch' });
        await b.geoClear('riders');
        await waitFor(() => events.at(-1)[0] === 'leave' && events.at(-1)[1] === 'b', { what: 'b leaves' });
        assert.ok(![...w.members.values()].some((m) => m.meta?.name === 'b'));
    }));

test('msgpack: a msgpack and a JSON client exchange JSON values and bytes', { skip: TRANSPORT !== 'websocket' && 'the HTTP transports speak JSON' }, () =>
    withGateway(FAST, async (gw, mk) => {
        const mp = mk(gw.url, { codec: 'msgpack' });
        const js = mk(gw.url);
        const gotMp = [];
        const gotJs = [];
        await mp.subscribe('mixed.chan', (d, info) => gotMp.push({ d, info }));
        await js.subscribe('mixed.chan', (d, info) => gotJs.push({ d, info }));
        const value = { text: 'Grüße', n: -5, big: 2 ** 40, f: 1.5, list: [1, null, true] };
        const bytes = new Uint8Array([0, 1, 2, 250, 255]);
        const r1 = await mp.publish('mixed.chan', value);
        const r2 = await mp.publish('mixed.chan', bytes);
        const r3 = await js.publish('mixed.chan', bytes);
        assert.deepEqual([r1.seq, r2.seq, r3.seq], [1, 2, 3]);
        await waitFor(() => gotMp.length === 3 && gotJs.length === 3, { what: 'three each' });
        for (const got of [gotMp, gotJs]) {
            assert.deepEqual(got[0].d, value);
            assert.equal(got[0].info.binary, undefined);
            for (const k of [1, 2]) {
                assert.equal(got[k].info.binary, true);
                assert.deepEqual(got[k].d, bytes);
            }
        }
        await mp.geoSet('mp-space', { lat: 1.5, lon: 2.5, meta: { name: 'mp' } });
        const near = await js.near('mp-space', { lat: 1.5, lon: 2.5, radius_m: 10 });
        assert.deepEqual(near.members[0].meta, { name: 'mp' });
    }));
