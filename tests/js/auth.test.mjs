/*
 * The client library with real JWTs (HS256, minted here) against a gateway
 * started with --jwt-key: getToken on each connect, a refresh before the
 * token expires (no reconnect), a refused token retried with a new one
 * when getToken is there and final without it. Skipped when the binary
 * has no --jwt-key (before the auth branch is merged).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { Client } from '../../clients/js/rtgate.js';
import { Gateway, rtgateBin, sleep, tempDir, waitFor, transportOptions } from './lib/harness.mjs';

const TRANSPORT_OPTIONS = await transportOptions(); /* WebSocket, or none: SSE / long-polling */
const hasAuth = execFileSync(rtgateBin(), ['--help'], { encoding: 'utf8' }).includes('--jwt-key');
const skip = hasAuth ? false : 'this rtgate has no --jwt-key';

const secret = crypto.randomBytes(32).toString('base64');
const b64url = (x) => Buffer.from(typeof x === 'string' ? x : JSON.stringify(x)).toString('base64url');

function mint(claims, key = secret) {
    const head = b64url({ alg: 'HS256', typ: 'JWT' }) + '.' + b64url(claims);
    return head + '.' + crypto.createHmac('sha256', key).update(head).digest('base64url');
}

function tokenFor(user, lifeS) {
    return mint({ sub: user, exp: Math.floor(Date.now() / 1000) + lifeS, sub_allow: ['>'], pub_allow: ['>'] });
}

async function authGateway() {
    const dir = tempDir('rtgate-js-auth-');
    const keyFile = path.join(dir, 'secret');
    fs.writeFileSync(keyFile, secret);
    return new Gateway(['--jwt-key', keyFile, '--jwt-alg', 'HS256', '--jwt-leeway-ms', 0, '--drain-ms', 100], { logDir: dir }).start();
}

test('a real token: getToken on connect, then a refresh before it expires, without reconnecting', { skip }, async () => {
    const gw = await authGateway();
    let calls = 0;
    const c = new Client(gw.url, { ...TRANSPORT_OPTIONS, getToken: () => (calls++, tokenFor('alice', 3)) });
    try {
        const info = await c.connect();
        assert.equal(info.user, 'alice');
        assert.ok(info.expires_in_ms > 1000 && info.expires_in_ms <= 3000);
        const refreshed = c.once('refreshed');
        const got = [];
        await c.subscribe('chat.auth', (d) => got.push(d));
        await refreshed;
        assert.equal(calls, 2, 'getToken: once to connect, once to refresh');
        await sleep(Math.max(0, info.expires_in_ms - 1500) + 1000); /* past the first token's expiry */
        await c.publish('chat.auth', { after: 'expiry' });
        await waitFor(() => got.length === 1, { what: 'delivery after the first token expired' });
        assert.equal(c.stats.connects, 1, 'one session throughout');
        assert.equal(c.session.client, info.client);
    } finally {
        c.close();
        await gw.stop();
    }
});

test('a refused token: with getToken the client asks for a new one and connects', { skip }, async () => {
    const gw = await authGateway();
    let calls = 0;
    const c = new Client(gw.url, {
        ...TRANSPORT_OPTIONS,
        minReconnectDelayMs: 50,
        getToken: () => (++calls === 1 ? mint({ sub: 'bob', exp: Math.floor(Date.now() / 1000) + 60 }, 'wrong key') : tokenFor('bob', 60)),
    });
    try {
        const info = await c.connect();
        assert.equal(info.user, 'bob');
        assert.equal(calls, 2);
    } finally {
        c.close();
        await gw.stop();
    }
});

test('a refused token without getToken: connect() rejects, no reconnect loop', { skip }, async () => {
    const gw = await authGateway();
    const c = new Client(gw.url, { ...TRANSPORT_OPTIONS, token: mint({ sub: 'eve', exp: 9999999999 }, 'wrong key') });
    const connecting = [];
    c.on('connecting', () => connecting.push(1));
    try {
        await assert.rejects(c.connect(), (e) => e.code === 401 || e.reason === 'unauthorized' || e.code === 4001);
        await sleep(500);
        assert.equal(connecting.length, 1);
        assert.equal(c.state, 'disconnected');
    } finally {
        c.close();
        await gw.stop();
    }
});
