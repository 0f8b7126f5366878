/*
 * The library's session layer without a server: a scripted transport and a
 * fake WebSocket play the server's side, for what a real gateway does not
 * do on demand (a duplicate or stale seq, several objects back to back in
 * one frame, Node 20's refused handshake that fires `error` and never
 * `close`).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Client, decodeJsonFrame } from '../../clients/js/rtgate.js';
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
