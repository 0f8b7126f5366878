/*
 * The library's session layer without a server: a scripted transport and a
 * fake WebSocket play the server's side, for what a real gateway does not
 * do on demand (a duplicate or stale seq, several objects back to back in
 * one frame, Node 20's refused handshake that fires `error` and never
 * `close`).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Client, decodeJsonFrame, msgpackDecodeAll, msgpackEncode } from '../../clients/js/rtgate.js';
import { waitFor } from './lib/harness.mjs';

/* A transport whose "server" is the test: it answers connect and sub, and
 * the test pushes messages with deliver(). */
function scriptedTransport(log) {
    return () => {
        const t = {
            name: 'scripted',
            open(sink) {
                t.sink = sink;
                queueMicrotask(() => sink.open());
            },
            send(frames) {
                for (const m of frames.flat()) {
                    log.push(m);
                    if (m.type === 'connect') t.sink.message({ type: 'connected', id: m.id, client: 'c1', user: 'u', node: 'n', heartbeat_ms: 25000, limits: {} });
                    if (m.type === 'sub') t.sink.message({ type: 'reply', id: m.id, ok: true, durable: true, seq: 0, epoch: 'e1' });
                }
                return true;
            },
            close() {
                t.sink.closed({ code: 1000, reason: '', local: true });
            },
        };
        log.transport = t;
        return t;
    };
}

test('dedup by seq: a repeated or older seq never reaches the handler twice; acks are cumulative', async () => {
    const log = [];
    const c = new Client('scripted://', { transports: [scriptedTransport(log)], ackDelayMs: 1 });
    const seqs = [];
    await c.subscribe('a.b', (d, info) => seqs.push(info.seq));
    const t = log.transport;
    for (const seq of [1, 2, 2, 3, 1, 5, 4, 6]) t.sink.message({ type: 'msg', channel: 'a.b', seq, data: { seq } });
    await waitFor(() => log.some((m) => m.type === 'ack' && m.seq === 6), { what: 'ack of 6' });
    assert.deepEqual(seqs, [1, 2, 3, 5, 6]);
    assert.equal(c.stats.duplicates, 3);
    const acks = log.filter((m) => m.type === 'ack');
    assert.ok(acks.length < 5, 'coalesced');
    c.close();
});

test('several JSON objects in one frame, back to back or one per line', () => {
    assert.deepEqual(decodeJsonFrame('{"a":1}\n{"b":"}{"}\n'), [{ a: 1 }, { b: '}{' }]);
    assert.deepEqual(decodeJsonFrame('{"a":1}{"b":[1,{"c":"\\"}"}]} {"d":2}'), [{ a: 1 }, { b: [1, { c: '"}' }] }, { d: 2 }]);
    assert.equal(decodeJsonFrame('{"a":1} x'), null);
    assert.equal(decodeJsonFrame('[1,2]'), null);
});

test("Node 20's refused handshake (error, never close) counts as a lost connection and is retried", async () => {
    let made = 0;
    class RefusingWebSocket {
        constructor() {
            made++;
            this.readyState = 0;
            setTimeout(() => this.onerror?.({ type: 'error' }), 5); /* and no close, ever */
        }
        close() {}
    }
    const c = new Client('ws://127.0.0.1:1/ws', { WebSocket: RefusingWebSocket, minReconnectDelayMs: 5, maxReconnectDelayMs: 20 });
    const states = [];
    c.on('state', (e) => states.push(e.state));
    c.connect().catch(() => {});
    await waitFor(() => made >= 4, { what: 'four attempts' });
    c.close();
    assert.ok(states.filter((s) => s === 'disconnected').length >= 3);
});

test('msgpack round trip, and a decoder that refuses lies about lengths', () => {
    const values = [
        null, true, false, 0, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, Number.MAX_SAFE_INTEGER,
        -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1, Number.MIN_SAFE_INTEGER,
        1.5, -0.25, 1e300, '', 'a', 'x'.repeat(31), 'x'.repeat(32), 'x'.repeat(300), 'x'.repeat(70000), 'Grüße, 世界 😀',
        new Uint8Array([0, 1, 255]), new Uint8Array(70000).fill(7), [], [1, [2, [3]]], Array(20).fill(0),
        {}, { a: 1, b: { c: [true, null] } }, Object.fromEntries([...Array(20).keys()].map((i) => ['k' + i, i])),
    ];
    for (const v of values) {
        const [back, ...rest] = msgpackDecodeAll(msgpackEncode(v));
        assert.deepEqual(back, v);
        assert.equal(rest.length, 0);
    }
    /* maps back to back, as a frame carries them */
    const frame = new Uint8Array([...msgpackEncode({ a: 1 }), ...msgpackEncode({ b: 2 })]);
    assert.deepEqual(msgpackDecodeAll(frame), [{ a: 1 }, { b: 2 }]);
    /* array32 of 100 million elements in 5 bytes: refused, not allocated */
    assert.throws(() => msgpackDecodeAll(new Uint8Array([0xdd, 0x05, 0xf5, 0xe1, 0x00])));
    assert.throws(() => msgpackDecodeAll(new Uint8Array([0xdf, 0xff, 0xff, 0xff, 0xff])));
    assert.throws(() => msgpackDecodeAll(new Uint8Array([0xda, 0x00, 0x10, 0x41])), 'truncated str');
});
