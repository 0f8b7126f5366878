/*
 * End-to-end: the demo page (clients/, served by rtgate --static) in
 * headless Chromium from Debian's `chromium` package, driven by
 * playwright-core with executablePath (never a downloaded browser). Each
 * launch gets a fresh profile: Playwright passes its own temporary
 * --user-data-dir. Two pages chat; the gateway is killed and restarted and
 * a page shows what the other sent meanwhile; the nearby view lists a member
 * another page placed close by. The last test leaves a screenshot in
 * RTGATE_SCREENSHOT (docs/demo.png was taken this way).
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';

import { chromium } from 'playwright-core';

import { Gateway, ROOT } from './lib/harness.mjs';

const CHROMIUM = process.env.RTGATE_CHROMIUM || '/usr/bin/chromium';
const FLAGS = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
];
const SLOW = { timeout: 20000 }; /* generous: the machine is shared */

let browser, gw;
before(async () => {
    assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing: scripts/setup.sh installs Debian's chromium`);
    gw = await new Gateway(['--static', path.join(ROOT, 'clients'), '--drain-ms', 100]).start();
    browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS, headless: true });
});
after(async () => {
    await browser?.close();
    await gw?.stop();
});

/* A page of its own (own context: own storage) showing the demo; noWebSocket: the page
 * has none (an init script removes it before the page's scripts run). */
async function openDemo(query, { noWebSocket = false } = {}) {
    const context = await browser.newContext({ viewport: { width: 1100, height: 780 } });
    const page = await context.newPage();
    if (noWebSocket) await page.addInitScript(() => (window.WebSocket = undefined));
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.errors = errors;
    await page.goto(`${gw.http}/?${new URLSearchParams(query)}`);
    await page.waitForSelector('#conn[data-state="connected"]', SLOW);
    return page;
}

async function say(page, text) {
    await page.fill('#text', text);
    await page.click('#send-form button');
}

const messageIn = (page, text) =>
    page.waitForFunction((t) => [...document.querySelectorAll('#messages li:not(.pending) .text')].some((e) => e.textContent === t), text, SLOW);

test('two pages chat', async () => {
    const alice = await openDemo({ room: 'e2e1', name: 'alice' });
    const bob = await openDemo({ room: 'e2e1', name: 'bob' });
    await say(alice, 'hello bob');
    await messageIn(bob, 'hello bob');
    await say(bob, 'hi alice');
    await messageIn(alice, 'hi alice');
    assert.equal(await alice.locator('#messages li').count(), 2);
    assert.deepEqual([...alice.errors, ...bob.errors], []);
    await alice.context().close();
    await bob.context().close();
});

test('the gateway restarts: the page shows what was sent meanwhile', async () => {
    const alice = await openDemo({ room: 'e2e2', name: 'alice' });
    const bob = await openDemo({ room: 'e2e2', name: 'bob' });
    await say(bob, 'before the restart');
    await messageIn(alice, 'before the restart');
    await gw.sigkill();
    await alice.waitForSelector('#conn:not([data-state="connected"])', SLOW);
    await bob.waitForSelector('#conn:not([data-state="connected"])', SLOW);
    await say(bob, 'sent while the gateway was down');
    assert.equal(await bob.locator('#messages li.pending').count(), 1, 'queued in the page');
    await gw.restart();
    await alice.waitForSelector('#conn[data-state="connected"]', SLOW);
    await messageIn(alice, 'sent while the gateway was down');
    await messageIn(bob, 'sent while the gateway was down');
    assert.equal(await bob.locator('#messages li.pending').count(), 0);
    await say(alice, 'after the restart');
    await messageIn(bob, 'after the restart');
    assert.deepEqual([...alice.errors, ...bob.errors], []);
    await alice.context().close();
    await bob.context().close();
});

test('with WebSocket disabled the page falls back to SSE, and keeps receiving across a restart', async () => {
    const alice = await openDemo({ room: 'e2e4', name: 'alice' }, { noWebSocket: true });
    const bob = await openDemo({ room: 'e2e4', name: 'bob' });
    assert.equal(await alice.getAttribute('#conn', 'data-transport'), 'sse');
    assert.equal(await alice.evaluate(() => window.rtgateDemo.client.transport), 'sse');
    assert.equal(await bob.getAttribute('#conn', 'data-transport'), 'websocket');
    await say(bob, 'to a page without WebSocket');
    await messageIn(alice, 'to a page without WebSocket');
    await say(alice, 'from a page without WebSocket');
    await messageIn(bob, 'from a page without WebSocket');
    await gw.sigkill();
    await alice.waitForSelector('#conn:not([data-state="connected"])', SLOW);
    await gw.restart();
    await bob.waitForSelector('#conn[data-state="connected"]', SLOW);
    await say(bob, 'after the restart, to the SSE page');
    await alice.waitForSelector('#conn[data-state="connected"]', SLOW);
    await messageIn(alice, 'after the restart, to the SSE page');
    assert.equal(await alice.evaluate(() => window.rtgateDemo.client.transport), 'sse');
    await say(alice, 'the SSE page after the restart');
    await messageIn(bob, 'the SSE page after the restart');
    assert.deepEqual([...alice.errors, ...bob.errors], []);
    await alice.context().close();
    await bob.context().close();
});

test('the nearby view lists a member another page placed close by', async () => {
    const alice = await openDemo({ room: 'e2e3', name: 'alice', lat: 52.52, lon: 13.405 });
    const carol = await openDemo({ room: 'e2e3', name: 'carol', lat: 52.5212, lon: 13.4062 });
    await alice.waitForFunction(
        () => [...document.querySelectorAll('#members li .name')].some((e) => e.textContent === 'carol'),
        null,
        SLOW,
    );
    const row = await alice.locator('#members li', { hasText: 'carol' }).textContent();
    const metres = Number(row.match(/(\d+) m/)[1]);
    assert.ok(metres > 100 && metres < 220, `carol is ~155 m away, the page says ${metres} m`);
    /* movers simulated from the page show up too; then a screenshot */
    await alice.click('#add-movers');
    await alice.waitForFunction(() => document.querySelectorAll('#members li .name').length >= 3, null, SLOW);
    await say(carol, 'I am 155 m north-east of you');
    await messageIn(alice, 'I am 155 m north-east of you');
    await say(alice, 'I can see you on the map');
    await messageIn(alice, 'I can see you on the map');
    await alice.waitForTimeout(1500); /* let the movers move */
    const shot = process.env.RTGATE_SCREENSHOT || path.join(os.tmpdir(), 'rtgate-demo.png');
    await alice.screenshot({ path: shot });
    assert.ok(fs.statSync(shot).size > 10000);
    assert.deepEqual([...alice.errors, ...carol.errors], []);
    await alice.context().close();
    await carol.context().close();
});
