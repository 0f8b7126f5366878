/*
 * harness.mjs: what the JavaScript tests share. Starts the real rtgate
 * binary (and nats-server) on free loopback ports, restarts or SIGKILLs
 * them by pid, cuts connections through a TCP proxy, and checks at the end
 * that rtgate exited 0 with no sanitizer report in its log.
 *
 * RTGATE_BIN names the binary (ctest sets it); without it build-test/ then
 * build/ under the project root are tried.
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
export const ROOT = path.resolve(HERE, '..', '..', '..');
const SANITIZER_MARKERS = ['ERROR: AddressSanitizer', 'ERROR: LeakSanitizer', 'runtime error:'];

export function rtgateBin() {
    if (process.env.RTGATE_BIN) return process.env.RTGATE_BIN;
    for (const d of ['build-test', 'build']) {
        const p = path.join(ROOT, d, 'gateway', 'rtgate');
        if (fs.existsSync(p)) return p;
    }
    throw new Error('RTGATE_BIN is not set and no built rtgate was found');
}

/* The WebSocket the library should use here: Node's own when it has one
 * (Node 22, or 20 with --experimental-websocket), else the ws package. */
export async function webSocketImpl() {
    if (globalThis.WebSocket) return globalThis.WebSocket;
    return (await import('ws')).WebSocket;
}

/*
 * RTGATE_JS_TRANSPORT picks what the client tests run over: websocket (the
 * default), sse or longpoll. The last two run with no WebSocket at all
 * (run.sh starts Node 20 without --experimental-websocket, and a global one
 * is removed), so the library falls back by itself: to SSE with its default
 * list, to long-polling when SSE is left out of it.
 */
export const TRANSPORT = process.env.RTGATE_JS_TRANSPORT || 'websocket';

export async function transportOptions() {
    if (TRANSPORT === 'websocket') return { WebSocket: await webSocketImpl() };
    globalThis.WebSocket = undefined;
    const lib = await import('../../../clients/js/rtgate.js');
    if (TRANSPORT === 'sse') return {};
    if (TRANSPORT === 'longpoll') return { transports: [lib.WebSocketTransport.create, lib.LongPollTransport.create] };
    throw new Error('RTGATE_JS_TRANSPORT must be websocket, sse or longpoll');
}

export function tempDir(prefix) {
    return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function freePort() {
    return new Promise((resolve, reject) => {
        const s = net.createServer();
        s.unref();
        s.on('error', reject);
        s.listen(0, '127.0.0.1', () => {
            const { port } = s.address();
            s.close(() => resolve(port));
        });
    });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/* Polls fn until it returns something truthy; fails after timeoutMs. */
export async function waitFor(fn, { timeoutMs = 15000, what = 'condition', intervalMs = 20 } = {}) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
        const v = await fn();
        if (v) return v;
        if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await sleep(intervalMs);
    }
}

async function httpOk(url) {
    try {
        const r = await fetch(url, { signal: AbortSignal.timeout(1000) });
        await r.arrayBuffer();
        return r.status === 200;
    } catch {
        return false;
    }
}

let nodeCounter = 0;

/* One rtgate process; restartable on the same port. */
export class Gateway {
    constructor(flags = [], { logDir } = {}) {
        this.flags = flags.map(String);
        this.logDir = logDir || tempDir('rtgate-js-');
        this.logPath = path.join(this.logDir, 'rtgate.log');
        this.nodeId = `js-${process.pid}-${++nodeCounter}`;
        this.port = null;
        this.proc = null;
        this.problems = [];
    }

    get url() {
        return `ws://127.0.0.1:${this.port}/ws`;
    }

    get http() {
        return `http://127.0.0.1:${this.port}`;
    }

    async start() {
        for (let attempt = 0; attempt < 3; attempt++) {
            if (!this.port || attempt > 0) this.port = await freePort();
            if (await this.#spawn()) return this;
        }
        throw new Error('rtgate could not start:\n' + this.log());
    }

    async #spawn() {
        const argv = ['--listen', `127.0.0.1:${this.port}`, '--node-id', this.nodeId, ...this.flags];
        const log = fs.openSync(this.logPath, 'a');
        fs.writeSync(log, `### argv: ${argv.join(' ')}\n`);
        const env = { ...process.env, ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0', UBSAN_OPTIONS: 'print_stacktrace=1' };
        const proc = spawn(rtgateBin(), argv, { stdio: ['ignore', log, log], env });
        fs.closeSync(log);
        this.proc = proc;
        proc.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
        const deadline = Date.now() + 15000;
        while (Date.now() < deadline) {
            if (proc.exitCode !== null || proc.signalCode !== null) return false;
            if (await httpOk(this.http + '/healthz')) return true;
            await sleep(30);
        }
        proc.kill('SIGKILL');
        throw new Error('rtgate did not answer /healthz:\n' + this.log());
    }

    /* Restarts on the same port (the listener sets SO_REUSEADDR). */
    async restart() {
        const deadline = Date.now() + 15000;
        while (Date.now() < deadline) {
            if (await this.#spawn()) return this;
            await sleep(100); /* the port may still be held a moment */
        }
        throw new Error('rtgate did not restart on its port:\n' + this.log());
    }

    async sigkill() {
        const p = this.proc;
        if (!p || p.exitCode !== null || p.signalCode !== null) return;
        p.kill('SIGKILL');
        await p.exited;
    }

    /* SIGTERM, then the checks every test gets: exit 0, no sanitizer report. */
    async stop() {
        const p = this.proc;
        if (p && p.exitCode === null && p.signalCode === null) {
            p.kill('SIGTERM');
            let timer;
            const r = await Promise.race([p.exited, new Promise((resolve) => (timer = setTimeout(resolve, 20000, null)))]);
            clearTimeout(timer);
            if (!r) {
                p.kill('SIGKILL');
                this.problems.push('rtgate did not exit within 20 s of SIGTERM');
            } else if (r.code !== 0) {
                this.problems.push(`rtgate exited with ${r.code ?? r.signal}`);
            }
        }
        const log = this.log();
        for (const m of SANITIZER_MARKERS) if (log.includes(m)) this.problems.push('sanitizer report: ' + m);
        if (this.problems.length) throw new Error(this.problems.join('; ') + '\n' + log.slice(-4000));
    }

    log() {
        try {
            return fs.readFileSync(this.logPath, 'utf8');
        } catch {
            return '';
        }
    }
}

/* One nats-server with JetStream and a fresh store. */
export class NatsServer {
    constructor() {
        this.dir = tempDir('rtgate-js-nats-');
        this.proc = null;
    }

    get url() {
        return `nats://127.0.0.1:${this.port}`;
    }

    async start() {
        const bin = ['/usr/sbin/nats-server', '/usr/bin/nats-server'].find((p) => fs.existsSync(p)) || 'nats-server';
        for (let attempt = 0; attempt < 3; attempt++) {
            this.port = await freePort();
            this.monPort = await freePort();
            const conf = path.join(this.dir, 'nats.conf');
            fs.writeFileSync(
                conf,
                `listen: 127.0.0.1:${this.port}\nhttp: 127.0.0.1:${this.monPort}\n` +
                    `jetstream { store_dir: "${path.join(this.dir, 'js')}", max_memory_store: 64MB, max_file_store: 256MB }\n`,
            );
            const log = fs.openSync(path.join(this.dir, 'nats.log'), 'a');
            this.proc = spawn(bin, ['-c', conf], { stdio: ['ignore', log, log] });
            fs.closeSync(log);
            this.proc.exited = new Promise((resolve) => this.proc.on('exit', resolve));
            const deadline = Date.now() + 15000;
            while (Date.now() < deadline && this.proc.exitCode === null) {
                if (await httpOk(`http://127.0.0.1:${this.monPort}/healthz`)) return this;
                await sleep(50);
            }
            this.proc.kill('SIGKILL');
        }
        throw new Error('nats-server did not start');
    }

    async stop() {
        if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) {
            this.proc.kill('SIGKILL');
            await this.proc.exited;
        }
        fs.rmSync(this.dir, { recursive: true, force: true });
    }
}

/* A TCP proxy in front of a gateway: cutAll() drops every connection
 * (a network failure with the gateway still up). */
export class TcpProxy {
    constructor(targetPort) {
        this.targetPort = targetPort;
        this.sockets = new Set();
        this.server = net.createServer((client) => {
            const upstream = net.connect(this.targetPort, '127.0.0.1');
            for (const s of [client, upstream]) {
                this.sockets.add(s);
                s.on('close', () => this.sockets.delete(s));
                s.on('error', () => {});
            }
            client.pipe(upstream);
            upstream.pipe(client);
            client.on('close', () => upstream.destroy());
            upstream.on('close', () => client.destroy());
        });
    }

    async listen() {
        this.port = await new Promise((resolve) => this.server.listen(0, '127.0.0.1', () => resolve(this.server.address().port)));
        return this;
    }

    get url() {
        return `ws://127.0.0.1:${this.port}/ws`;
    }

    cutAll() {
        for (const s of this.sockets) s.destroy();
    }

    close() {
        this.cutAll();
        return new Promise((resolve) => this.server.close(resolve));
    }
}

/* Records a client's events with timestamps, for assertions. */
export function recordEvents(client, types) {
    const log = [];
    for (const t of types) client.on(t, (detail) => log.push({ type: t, at: Date.now(), detail }));
    return log;
}
