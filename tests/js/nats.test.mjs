/*
 * The client library on the NATS engine, with a real nats-server
 * (JetStream) started here: the gateway is SIGKILLed and restarted in the
 * middle of a stream. Every message must reach the subscriber once and in
 * order, and every publish must be stored once although the ones in flight
 * at the kill are sent again (their msg_id makes the retry a dup).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { Client } from '../../clients/js/rtgate.js';
import { Gateway, NatsServer, TRANSPORT, recordEvents, sleep, waitFor, transportOptions } from './lib/harness.mjs';

const TRANSPORT_OPTIONS = await transportOptions(); /* WebSocket, or none: SSE / long-polling */
const FAST = ['--pub-rate', 100000, '--pub-burst', 100000, '--msg-rate', 100000, '--msg-burst', 100000];

let nats;
before(async () => {
    nats = await new NatsServer().start();
});
after(async () => {
    await nats?.stop();
});

function client(url) {
    return new Client(url, { ...TRANSPORT_OPTIONS, minReconnectDelayMs: 50, maxReconnectDelayMs: 500 });
}

test('gateway SIGKILLed mid-stream: every message once, in order; publishes retried without duplicates', async () => {
    const gw = await new Gateway(['--nats', nats.url, '--drain-ms', 100, ...FAST]).start();
    const sub = client(gw.url);
    const pub = client(gw.url);
    const N = 300;
    const WINDOW = 8; /* publishes in flight at once */
    const got = [];
    const events = recordEvents(sub, ['reset', 'gap', 'connected']);
    try {
        await sub.subscribe('orders.stream', (d, info) => got.push({ i: d.i, seq: info.seq }));
        await pub.connect();
        const replies = new Array(N);
        let next = 0;
        let outage = null;
        const worker = async () => {
            while (next < N) {
                const i = next++;
                const reply = pub.publish('orders.stream', { i });
                /* the kill lands while this one and up to 7 others are unanswered */
                if (i === N / 3)
                    outage = (async () => {
                        await gw.sigkill();
                        await sleep(300);
                        await gw.restart();
                    })();
                replies[i] = await reply;
            }
        };
        await Promise.all(Array.from({ length: WINDOW }, worker));
        await outage;
        await waitFor(() => got.length >= N, { what: `${N} deliveries`, timeoutMs: 30000 });
        await sleep(300);
        assert.equal(got.length, N, 'nothing delivered twice');
        assert.deepEqual(got.map((g) => g.i), [...Array(N).keys()], 'every message, in publish order');
        for (let k = 1; k < N; k++) assert.ok(got[k].seq > got[k - 1].seq, 'seq strictly increasing');
        const seqs = new Set(replies.map((r) => r.seq));
        assert.equal(seqs.size, N, 'each publish has its own seq: none stored twice');
        assert.ok(pub.stats.retries > 0, 'publishes in flight at the kill were sent again');
        assert.equal(events.filter((e) => e.type === 'reset').length, 0, 'JetStream kept the history: recovered');
        assert.equal(events.filter((e) => e.type === 'gap').length, 0);
        assert.ok(sub.stats.connects >= 2, 'the subscriber reconnected');
        /* (with WebSocket, a fallback that won the race against the restart moves back) */
        await waitFor(() => sub.transport === TRANSPORT && pub.transport === TRANSPORT, { what: `both on ${TRANSPORT}` });
        /* the stream itself holds each message once */
        const reader = client(gw.url);
        const stored = [];
        await reader.subscribe('orders.stream', (d) => stored.push(d.i), { history: true });
        await waitFor(() => stored.length >= N, { what: 'history' });
        await sleep(200);
        reader.close();
        assert.deepEqual(stored, [...Array(N).keys()]);
    } finally {
        sub.close();
        pub.close();
        await gw.stop();
    }
});
