/*
 * rtgate.js: the JavaScript client of rtgate, protocol v1 (PROTOCOL.md and
 * docs/protocol.md). One ES module with no dependency, for browsers
 * (<script type="module">) and Node (a global WebSocket, as in Node 22 or
 * Node 20 with --experimental-websocket, or options.WebSocket such as the
 * `ws` package's; without one, the HTTP transports over fetch).
 *
 * Two layers:
 *  - A transport moves protocol messages (plain objects) over one
 *    connection and reports how it ended. Built in, tried in this order:
 *    WebSocketTransport, SseTransport (Server-Sent Events read with fetch,
 *    requests by POST) and LongPollTransport; the client falls back by
 *    itself when one is not there or does not get through, says which it
 *    uses (`transport`, and the `transport` event), and tries WebSocket
 *    again later. options.transports replaces the list.
 *  - Client is the session: connect and reconnect with backoff, requests
 *    matched to replies, subscriptions acked after their handler returns,
 *    resume with since/epoch and dedup by seq after every reconnect,
 *    publishes retried with their msg_id until answered, presence restored.
 *
 * Every queue is bounded: requests waiting for a connection or a token
 * (maxPending), inbound messages waiting for an async handler (maxBuffered,
 * ephemeral ones beyond it are dropped; durable ones are bounded by the
 * server's unacked window since they are acked only once handled).
 */

export const VERSION = '0.1.0';
export const SUBPROTOCOL_JSON = 'rtgate.v1.json';
export const SUBPROTOCOL_MSGPACK = 'rtgate.v1.msgpack';

/* An error answered by the server (code 400..503) or raised by the library
 * (code 0 with a reason such as 'closed', 'queue_full', 'too_large'). */
export class RtgateError extends Error {
    constructor(code, reason, message, retryAfterMs) {
        super(message || reason || 'rtgate error ' + code);
        this.name = 'RtgateError';
        this.code = code;
        this.reason = reason;
        if (retryAfterMs !== undefined) this.retryAfterMs = retryAfterMs;
    }
}

function errorFromReply(reply) {
    const e = reply.error || {};
    return new RtgateError(e.code || 0, e.reason || 'error', e.message, e.retry_after_ms);
}

/* Reports an exception thrown by application code without unwinding the
 * library's own state: like an EventTarget listener's error. */
function reportAppError(err) {
    setTimeout(() => {
        throw err;
    }, 0);
}

class Emitter {
    #handlers = new Map();

    /* Adds a listener; returns a function that removes it. */
    on(type, fn) {
        if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
        this.#handlers.get(type).add(fn);
        return () => this.off(type, fn);
    }

    off(type, fn) {
        this.#handlers.get(type)?.delete(fn);
    }

    /* Resolves with the next event of this type. */
    once(type) {
        return new Promise((resolve) => {
            const off = this.on(type, (detail) => {
                off();
                resolve(detail);
            });
        });
    }

    listenerCount(type) {
        return this.#handlers.get(type)?.size || 0;
    }

    emit(type, detail) {
        const set = this.#handlers.get(type);
        if (!set) return;
        for (const fn of [...set]) {
            try {
                fn(detail);
            } catch (err) {
                reportAppError(err);
            }
        }
    }
}

/* ------------------------------------------------------------------ */
/* Encoding: JSON text frames, several messages per frame. */

/* Splits one text frame into messages. The server writes one object per
 * line; PROTOCOL.md also allows objects back to back, which the scanner
 * handles. Returns null when the text is not a sequence of JSON objects. */
export function decodeJsonFrame(text) {
    const out = [];
    for (const line of text.split('\n')) {
        const s = line.trim();
        if (!s) continue;
        try {
            out.push(JSON.parse(s));
            continue;
        } catch {
            /* several objects on one line: split them below */
        }
        const parts = splitObjects(s);
        if (!parts) return null;
        for (const p of parts) out.push(JSON.parse(p));
    }
    return out.every((m) => m && typeof m === 'object' && !Array.isArray(m)) ? out : null;
}

function splitObjects(s) {
    const parts = [];
    let depth = 0,
        inString = false,
        escaped = false,
        start = -1;
    for (let i = 0; i < s.length; i++) {
        const c = s[i];
        if (inString) {
            if (escaped) escaped = false;
            else if (c === '\\') escaped = true;
            else if (c === '"') inString = false;
        } else if (c === '"') {
            inString = true;
        } else if (c === '{' || c === '[') {
            if (depth++ === 0) start = i;
        } else if (c === '}' || c === ']') {
            if (--depth < 0) return null;
            if (depth === 0) parts.push(s.slice(start, i + 1));
        } else if (depth === 0 && !/\s/.test(c)) {
            return null;
        }
    }
    return depth === 0 && !inString ? parts : null;
}

function utf8Length(s) {
    let n = 0;
    for (let i = 0; i < s.length; i++) {
        const c = s.charCodeAt(i);
        if (c < 0x80) n += 1;
        else if (c < 0x800) n += 2;
        else if (c >= 0xd800 && c <= 0xdbff) {
            n += 4;
            i++;
        } else n += 3;
    }
    return n;
}

function toBase64(bytes) {
    let bin = '';
    for (let i = 0; i < bytes.length; i += 0x8000)
        bin += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(bin);
}

function fromBase64(s) {
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
}

function asBytes(data) {
    if (data instanceof Uint8Array) return data;
    if (data instanceof ArrayBuffer) return new Uint8Array(data);
    if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    return null;
}

function randomId() {
    const c = globalThis.crypto;
    if (c?.randomUUID) return c.randomUUID();
    const b = new Uint8Array(16);
    if (c?.getRandomValues) c.getRandomValues(b);
    else for (let i = 0; i < 16; i++) b[i] = Math.floor(Math.random() * 256);
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/* ------------------------------------------------------------------ */
/* msgpack, dependency-free: what the protocol's maps need (nil, booleans,
 * integers up to 64 bits, float64, str, bin, array, map; ext is skipped). */

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

class MsgpackWriter {
    constructor() {
        this.buf = new Uint8Array(256);
        this.view = new DataView(this.buf.buffer);
        this.len = 0;
    }

    room(n) {
        if (this.len + n <= this.buf.length) return;
        let cap = this.buf.length * 2;
        while (cap < this.len + n) cap *= 2;
        const nb = new Uint8Array(cap);
        nb.set(this.buf.subarray(0, this.len));
        this.buf = nb;
        this.view = new DataView(nb.buffer);
    }

    byte(b) {
        this.room(1);
        this.buf[this.len++] = b;
    }

    head(b, n, bytes) {
        this.room(1 + bytes);
        this.buf[this.len++] = b;
        if (bytes === 1) this.view.setUint8(this.len, n);
        else if (bytes === 2) this.view.setUint16(this.len, n);
        else if (bytes === 4) this.view.setUint32(this.len, n);
        this.len += bytes;
    }

    raw(bytes) {
        this.room(bytes.length);
        this.buf.set(bytes, this.len);
        this.len += bytes.length;
    }

    /* A length-prefixed family (str, bin, array, map): fix form, 8, 16, 32. */
    sized(n, fix, fixMax, b8, b16, b32) {
        if (fix !== null && n <= fixMax) this.byte(fix | n);
        else if (b8 !== null && n < 0x100) this.head(b8, n, 1);
        else if (n < 0x10000) this.head(b16, n, 2);
        else this.head(b32, n, 4);
    }

    int(v) {
        if (v >= 0 && v < 0x80) return this.byte(v);
        if (v < 0 && v >= -32) return this.byte(v & 0xff);
        this.room(9);
        const d = this.view;
        if (v >= 0) {
            if (v < 0x100) (this.buf[this.len++] = 0xcc), d.setUint8(this.len, v), (this.len += 1);
            else if (v < 0x10000) (this.buf[this.len++] = 0xcd), d.setUint16(this.len, v), (this.len += 2);
            else if (v < 0x100000000) (this.buf[this.len++] = 0xce), d.setUint32(this.len, v), (this.len += 4);
            else (this.buf[this.len++] = 0xcf), d.setBigUint64(this.len, BigInt(v)), (this.len += 8);
        } else if (v >= -0x80) (this.buf[this.len++] = 0xd0), d.setInt8(this.len, v), (this.len += 1);
        else if (v >= -0x8000) (this.buf[this.len++] = 0xd1), d.setInt16(this.len, v), (this.len += 2);
        else if (v >= -0x80000000) (this.buf[this.len++] = 0xd2), d.setInt32(this.len, v), (this.len += 4);
        else (this.buf[this.len++] = 0xd3), d.setBigInt64(this.len, BigInt(v)), (this.len += 8);
    }

    value(v, depth = 0) {
        if (depth > 64) throw new RtgateError(400, 'bad_request', 'data nested too deep');
        if (v === null || v === undefined) return this.byte(0xc0);
        if (v === false || v === true) return this.byte(v ? 0xc3 : 0xc2);
        if (typeof v === 'number') {
            if (Number.isSafeInteger(v)) return this.int(v);
            this.room(9);
            this.buf[this.len++] = 0xcb;
            this.view.setFloat64(this.len, v);
            this.len += 8;
            return;
        }
        if (typeof v === 'bigint') {
            this.room(9);
            this.buf[this.len++] = v < 0n ? 0xd3 : 0xcf;
            if (v < 0n) this.view.setBigInt64(this.len, v);
            else this.view.setBigUint64(this.len, v);
            this.len += 8;
            return;
        }
        if (typeof v === 'string') {
            const b = textEncoder.encode(v);
            this.sized(b.length, 0xa0, 31, 0xd9, 0xda, 0xdb);
            return this.raw(b);
        }
        const bytes = asBytes(v);
        if (bytes) {
            this.sized(bytes.length, null, 0, 0xc4, 0xc5, 0xc6);
            return this.raw(bytes);
        }
        if (Array.isArray(v)) {
            this.sized(v.length, 0x90, 15, null, 0xdc, 0xdd);
            for (const x of v) this.value(x, depth + 1);
            return;
        }
        if (typeof v.toJSON === 'function') return this.value(v.toJSON(), depth);
        const keys = Object.keys(v).filter((k) => v[k] !== undefined && typeof v[k] !== 'function');
        this.sized(keys.length, 0x80, 15, null, 0xde, 0xdf);
        for (const k of keys) {
            this.value(k, depth + 1);
            this.value(v[k], depth + 1);
        }
    }

    bytes() {
        return this.buf.slice(0, this.len);
    }
}

class MsgpackReader {
    constructor(bytes) {
        this.b = bytes;
        this.d = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
        this.p = 0;
    }

    need(n) {
        if (this.p + n > this.b.length) throw new Error('truncated msgpack');
    }

    u(n) {
        this.need(n);
        const d = this.d,
            p = this.p;
        this.p += n;
        if (n === 1) return d.getUint8(p);
        if (n === 2) return d.getUint16(p);
        if (n === 4) return d.getUint32(p);
        return Number(d.getBigUint64(p));
    }

    i(n) {
        this.need(n);
        const d = this.d,
            p = this.p;
        this.p += n;
        if (n === 1) return d.getInt8(p);
        if (n === 2) return d.getInt16(p);
        if (n === 4) return d.getInt32(p);
        return Number(d.getBigInt64(p));
    }

    take(n) {
        this.need(n);
        const out = this.b.subarray(this.p, this.p + n);
        this.p += n;
        return out;
    }

    str(n) {
        return textDecoder.decode(this.take(n));
    }

    array(n, depth) {
        /* every element takes at least one byte: a count past the bytes
         * left is a lie (no allocation bomb) */
        if (n > this.b.length - this.p) throw new Error('bad msgpack array length');
        const out = new Array(n);
        for (let k = 0; k < n; k++) out[k] = this.value(depth + 1);
        return out;
    }

    map(n, depth) {
        if (n * 2 > this.b.length - this.p) throw new Error('bad msgpack map length');
        const out = {};
        for (let k = 0; k < n; k++) {
            const key = this.value(depth + 1);
            out[typeof key === 'string' ? key : String(key)] = this.value(depth + 1);
        }
        return out;
    }

    ext(n) {
        this.need(1 + n);
        const type = this.i(1);
        return { extType: type, data: this.take(n) };
    }

    value(depth = 0) {
        if (depth > 64) throw new Error('msgpack nested too deep');
        const t = this.u(1);
        if (t < 0x80) return t;
        if (t < 0x90) return this.map(t & 0x0f, depth);
        if (t < 0xa0) return this.array(t & 0x0f, depth);
        if (t < 0xc0) return this.str(t & 0x1f);
        if (t >= 0xe0) return t - 0x100;
        switch (t) {
            case 0xc0: return null;
            case 0xc2: return false;
            case 0xc3: return true;
            case 0xc4: return this.take(this.u(1)).slice();
            case 0xc5: return this.take(this.u(2)).slice();
            case 0xc6: return this.take(this.u(4)).slice();
            case 0xc7: return this.ext(this.u(1));
            case 0xc8: return this.ext(this.u(2));
            case 0xc9: return this.ext(this.u(4));
            case 0xca: this.need(4); this.p += 4; return this.d.getFloat32(this.p - 4);
            case 0xcb: this.need(8); this.p += 8; return this.d.getFloat64(this.p - 8);
            case 0xcc: return this.u(1);
            case 0xcd: return this.u(2);
            case 0xce: return this.u(4);
            case 0xcf: return this.u(8);
            case 0xd0: return this.i(1);
            case 0xd1: return this.i(2);
            case 0xd2: return this.i(4);
            case 0xd3: return this.i(8);
            case 0xd4: return this.ext(1);
            case 0xd5: return this.ext(2);
            case 0xd6: return this.ext(4);
            case 0xd7: return this.ext(8);
            case 0xd8: return this.ext(16);
            case 0xd9: return this.str(this.u(1));
            case 0xda: return this.str(this.u(2));
            case 0xdb: return this.str(this.u(4));
            case 0xdc: return this.array(this.u(2), depth);
            case 0xdd: return this.array(this.u(4), depth);
            case 0xde: return this.map(this.u(2), depth);
            case 0xdf: return this.map(this.u(4), depth);
            default: throw new Error('bad msgpack type 0x' + t.toString(16));
        }
    }
}

/* Encodes one value as msgpack bytes. */
export function msgpackEncode(value) {
    const w = new MsgpackWriter();
    w.value(value);
    return w.bytes();
}

/* Decodes every value in bytes (maps back to back, as frames carry them). */
export function msgpackDecodeAll(bytes) {
    const r = new MsgpackReader(asBytes(bytes));
    const out = [];
    while (r.p < r.b.length) out.push(r.value());
    return out;
}

/*
 * A codec turns protocol messages into frames and back:
 *   subprotocol, binary (frames are bytes), bytesInData (binary data goes in
 *   `data` as bytes, not base64 in `data_b64`), encode(msg) -> string|bytes,
 *   size(encoded), join(encodedList) -> one frame, decode(frame) -> messages
 *   or null.
 */
export const jsonCodec = {
    name: 'json',
    subprotocol: SUBPROTOCOL_JSON,
    binary: false,
    bytesInData: false,
    encode: (m) => JSON.stringify(m),
    size: (e) => utf8Length(e) + 1,
    join: (list) => list.join('\n'),
    decode: (data) => decodeJsonFrame(typeof data === 'string' ? data : textDecoder.decode(asBytes(data))),
};

export const msgpackCodec = {
    name: 'msgpack',
    subprotocol: SUBPROTOCOL_MSGPACK,
    binary: true,
    bytesInData: true,
    encode: (m) => msgpackEncode(m),
    size: (e) => e.length,
    join(list) {
        const out = new Uint8Array(list.reduce((n, e) => n + e.length, 0));
        let at = 0;
        for (const e of list) {
            out.set(e, at);
            at += e.length;
        }
        return out;
    },
    decode(data) {
        if (typeof data === 'string') return null;
        try {
            const msgs = msgpackDecodeAll(data);
            return msgs.every((m) => m && typeof m === 'object' && !Array.isArray(m) && !asBytes(m)) ? msgs : null;
        } catch {
            return null;
        }
    },
};

function codecOf(options) {
    const c = options.codec || 'json';
    if (typeof c === 'object') return c;
    if (c === 'json') return jsonCodec;
    if (c === 'msgpack') return msgpackCodec;
    throw new RtgateError(0, 'bad_option', 'codec must be json or msgpack');
}

/* Splits messages into frames within the server's limits (at most
 * maxMessages each, and maxBytes, unless one message alone is bigger). */
function frame(codec, messages, maxBytes, maxMessages) {
    const frames = [];
    let cur = [],
        bytes = 0;
    for (const m of messages) {
        const e = codec.encode(m);
        const n = codec.size(e);
        if (cur.length && (cur.length >= maxMessages || bytes + n > maxBytes)) {
            frames.push(codec.join(cur));
            cur = [];
            bytes = 0;
        }
        cur.push(e);
        bytes += n;
    }
    if (cur.length) frames.push(codec.join(cur));
    return frames;
}

/* ------------------------------------------------------------------ */
/* Transports. */

/*
 * A transport carries one connection. The Client calls:
 *   open(sink)   sink.open(), sink.message(obj), sink.invalid(data) and
 *                exactly one sink.closed({code, reason}) (also when the
 *                connection never opened)
 *   send(messages, {maxBytes, maxMessages})  false if not open; the
 *                transport frames them within the server's limits
 *   close(code, reason)
 * and reads `name`. A transport factory is (url, options) => transport, or
 * null when the transport cannot run here.
 */
export class WebSocketTransport {
    static create(url, options) {
        const WS = options.WebSocket || globalThis.WebSocket;
        return WS ? new WebSocketTransport(url, WS, codecOf(options)) : null;
    }

    constructor(url, WS, codec = jsonCodec) {
        this.name = 'websocket';
        this.url = url;
        this.WS = WS;
        this.codec = codec;
        this.ws = null;
        this.done = false;
        this.opened = false;
    }

    open(sink) {
        this.sink = sink;
        let ws;
        try {
            ws = new this.WS(this.url, [this.codec.subprotocol]);
        } catch (err) {
            queueMicrotask(() => this.#finish({ code: 1006, reason: 'cannot open: ' + err.message }));
            return;
        }
        this.ws = ws;
        ws.binaryType = 'arraybuffer';
        ws.onopen = () => {
            if (this.done) return;
            this.opened = true;
            sink.open();
        };
        ws.onmessage = (ev) => {
            if (this.done) return;
            const msgs = this.codec.decode(ev.data);
            if (!msgs) return sink.invalid(ev.data);
            for (const m of msgs) {
                if (this.done) return;
                sink.message(m);
            }
        };
        ws.onerror = () => {
            /* Node 20's WebSocket reports a refused handshake with `error`
             * alone, never `close`: an error before open is a lost
             * connection. After open, `close` follows; the timer covers an
             * implementation where it would not. */
            if (!this.opened) this.#finish({ code: 1006, reason: 'connection failed' });
            else setTimeout(() => this.#finish({ code: 1006, reason: 'connection error' }), 1000);
        };
        ws.onclose = (ev) => this.#finish({ code: ev.code, reason: ev.reason || '' });
    }

    send(messages, { maxBytes = 65536, maxMessages = 50 } = {}) {
        const ws = this.ws;
        if (this.done || !ws || ws.readyState !== 1) return false;
        for (const f of frame(this.codec, messages, maxBytes, maxMessages)) ws.send(f);
        return true;
    }

    get bufferedAmount() {
        return this.ws ? this.ws.bufferedAmount : 0;
    }

    close(code = 1000, reason = '') {
        this.#finish({ code, reason, local: true });
    }

    #finish(info) {
        if (this.done) return;
        this.done = true;
        const ws = this.ws;
        if (ws) {
            ws.onopen = ws.onmessage = ws.onclose = null;
            /* a no-op, not null: the ws package throws an error event that
             * has no listener (closing while connecting raises one) */
            ws.onerror = () => {};
            try {
                if (ws.readyState === 0 || ws.readyState === 1)
                    ws.close(info.local && info.code >= 3000 ? info.code : 1000, '');
            } catch {
                /* closing a socket that never opened may throw */
            }
        }
        this.sink.closed({ ...info, opened: this.opened });
    }
}

/* The HTTP base of a gateway's WebSocket URL: ws://h/ws -> http://h (the
 * endpoints /sse, /poll and /send are at the root), or options.httpUrl. */
function httpBase(url, options) {
    if (options.httpUrl) return options.httpUrl.replace(/\/+$/, '');
    const u = new URL(url);
    const scheme = u.protocol === 'wss:' || u.protocol === 'https:' ? 'https:' : 'http:';
    return `${scheme}//${u.host}`;
}

const sleepMs = (ms, signal) =>
    new Promise((resolve) => {
        const t = setTimeout(resolve, ms);
        signal?.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
    });

/*
 * What the two HTTP transports share (docs/protocol.md, "Server-Sent Events
 * and long-polling"): the session is opened by the transport's first request,
 * which carries the `connect` the Client sends first (its id, its token as
 * Authorization: Bearer); the `connected` reply names the session's token;
 * every later request goes out by POST /send, numbered (Rtgate-Seq), one POST
 * at a time so the server sees them in order, a POST retried with its number
 * when its answer is lost (the server handles it once). JSON only.
 */
class HttpTransport {
    constructor(name, url, options) {
        this.name = name;
        this.base = httpBase(url, options);
        this.fetch = options.fetch || globalThis.fetch.bind(globalThis);
        this.done = false;
        this.reached = false; /* an HTTP answer came back (from the gateway or anything between) */
        this.opened = false; /* a gateway's message came back: the transport gets through */
        this.connectTimeoutMs = options.connectTimeoutMs ?? 10000;
        this.session = null;
        this.seq = 0;
        this.queue = []; /* POST bodies waiting, in order */
        this.posting = false;
        this.abort = new AbortController();
        this.closeCode = 0;
        this.closeReason = '';
    }

    open(sink) {
        this.sink = sink;
        queueMicrotask(() => !this.done && sink.open());
    }

    send(messages, { maxBytes = 65536, maxMessages = 50 } = {}) {
        if (this.done) return false;
        if (!this.started) {
            const hello = messages[0];
            if (!hello || hello.type !== 'connect') return false;
            this.started = true;
            /* a proxy that holds the stream back (buffering it whole) shows as no answer */
            this.openTimer = setTimeout(() => this.finish({ code: 1006, reason: 'no answer from the gateway' }), this.connectTimeoutMs);
            this.start(hello);
            messages = messages.slice(1);
        }
        for (const body of frame(jsonCodec, messages, maxBytes, maxMessages)) this.queue.push(body);
        this.#post();
        return true;
    }

    /* The session's first request: its `connect` as URL arguments and header. */
    request(path, hello) {
        const q = new URLSearchParams({ id: String(hello.id) });
        const headers = {};
        if (hello.token) headers.Authorization = 'Bearer ' + hello.token;
        return { url: `${this.base}${path}?${q}`, headers };
    }

    /* Messages from the server; `connected` gives the session's token. */
    deliver(msgs) {
        if (!this.opened) {
            this.opened = true;
            clearTimeout(this.openTimer);
        }
        for (const m of msgs) {
            if (this.done) return;
            if (m.type === 'connected' && m.session) this.session = m.session;
            if (m.type === 'disconnect') {
                this.closeCode = m.code;
                this.closeReason = m.reason || '';
            }
            this.sink.message(m);
        }
        if (this.session) this.#post();
    }

    /* An answer that is not the session's: a gateway's refusal (its JSON body: the
     * connect's reply and disconnect, or an error), or not a gateway's at all. */
    async refused(res) {
        const text = await res.text().catch(() => '');
        const json = res.headers.get('content-type')?.startsWith('application/json');
        const msgs = json ? decodeJsonFrame(text) : null;
        if (!msgs) return this.finish({ code: 1006, reason: `HTTP ${res.status}` }); /* not ours */
        this.deliver(msgs); /* a gateway's refusal: the transport gets through */
        const retryAfterMs = Number(res.headers.get('retry-after')) * 1000 || 0;
        this.finish({ code: this.closeCode || 1006, reason: this.closeReason || `HTTP ${res.status}`, retryAfterMs });
    }

    async #post() {
        if (this.posting || this.done || !this.session || !this.queue.length) return;
        this.posting = true;
        const body = this.queue.shift();
        const seq = ++this.seq;
        try {
            for (let attempt = 0; !this.done; attempt++) {
                let res;
                try {
                    res = await this.fetch(`${this.base}/send?seq=${seq}`, {
                        method: 'POST',
                        headers: { 'Content-Type': 'text/plain', 'Rtgate-Session': this.session },
                        body,
                        signal: this.abort.signal,
                    });
                    await res.arrayBuffer().catch(() => {});
                } catch {
                    res = null; /* no answer: send it again, the server handles a seq once */
                }
                if (this.done) return;
                if (res && (res.status === 204 || res.status === 200)) break;
                const retryable = !res || res.status === 429 || res.status === 503;
                if (!retryable || attempt >= 5) return this.finish({ code: 1006, reason: res ? `POST answered ${res.status}` : 'POST failed' });
                const after = Number(res?.headers.get('retry-after')) * 1000 || 250 * 2 ** attempt;
                await sleepMs(after, this.abort.signal);
            }
        } finally {
            this.posting = false;
        }
        this.#post();
    }

    close(code = 1000, reason = '') {
        if (this.done) return;
        if (this.session) {
            /* the session ends now rather than by the server's timeouts */
            this.fetch(`${this.base}/send?seq=${this.seq + 1}&close=1`, {
                method: 'POST',
                headers: { 'Content-Type': 'text/plain', 'Rtgate-Session': this.session },
                body: '',
                keepalive: true,
            }).catch(() => {});
        }
        this.finish({ code, reason, local: true });
    }

    finish(info) {
        if (this.done) return;
        this.done = true;
        clearTimeout(this.openTimer);
        this.abort.abort();
        this.sink.closed({ ...info, opened: this.opened, reached: this.reached });
    }
}

/*
 * Server-Sent Events, read with fetch (no EventSource: it cannot send a
 * header, and Node has none): GET /sse is the session; each event is one
 * message. The server's comment lines keep the stream alive; the Client's
 * own heartbeat (an app-level ping) finds a dead one.
 */
export class SseTransport extends HttpTransport {
    static create(url, options) {
        if (!globalThis.fetch && !options.fetch) return null;
        if (codecOf(options) !== jsonCodec) return null; /* the HTTP transports speak JSON */
        return new SseTransport(url, options);
    }

    constructor(url, options) {
        super('sse', url, options);
    }

    async start(hello) {
        const { url, headers } = this.request('/sse', hello);
        let res;
        try {
            res = await this.fetch(url, { headers: { ...headers, Accept: 'text/event-stream' }, signal: this.abort.signal, cache: 'no-store' });
        } catch (err) {
            return this.finish({ code: 1006, reason: 'stream failed: ' + (err?.message || err) });
        }
        if (this.done) return;
        this.reached = true;
        if (res.status !== 200 || !res.headers.get('content-type')?.startsWith('text/event-stream') || !res.body)
            return this.refused(res);
        const reader = res.body.getReader();
        const decoder = new TextDecoder();
        let buf = '',
            data = [];
        try {
            for (;;) {
                const { value, done } = await reader.read();
                if (done || this.done) break;
                buf += decoder.decode(value, { stream: true });
                let nl;
                while ((nl = buf.indexOf('\n')) >= 0) {
                    const line = buf.slice(0, nl).replace(/\r$/, '');
                    buf = buf.slice(nl + 1);
                    if (line === '') {
                        if (data.length) {
                            const msgs = decodeJsonFrame(data.join('\n'));
                            data = [];
                            if (msgs) this.deliver(msgs);
                            else this.sink.invalid(line);
                        }
                    } else if (line.startsWith('data:')) {
                        data.push(line.slice(line[5] === ' ' ? 6 : 5));
                    } /* id:, retry: and comments: nothing to do here */
                }
            }
        } catch {
            /* the stream broke: the connection is lost */
        }
        this.finish({ code: this.closeCode || 1006, reason: this.closeReason || 'stream ended' });
    }
}

/*
 * Long-polling, for where a stream does not get through either: GET /poll
 * opens the session (batch 1: the connect's reply), then each poll acks the
 * last batch it got (Rtgate-Batch) and is held until there is more; a lost
 * answer is answered again. A poll that fails (the node restarting, a
 * proxy's timeout) is sent again for a while, then the connection is lost.
 */
export class LongPollTransport extends HttpTransport {
    static create(url, options) {
        if (!globalThis.fetch && !options.fetch) return null;
        if (codecOf(options) !== jsonCodec) return null;
        return new LongPollTransport(url, options);
    }

    constructor(url, options) {
        super('longpoll', url, options);
        this.batch = 0;
        this.pollGiveUpMs = options.pollGiveUpMs ?? 10000;
    }

    async start(hello) {
        const { url, headers } = this.request('/poll', hello);
        let res;
        try {
            res = await this.fetch(url, { headers, signal: this.abort.signal, cache: 'no-store' });
        } catch (err) {
            return this.finish({ code: 1006, reason: 'poll failed: ' + (err?.message || err) });
        }
        if (this.done) return;
        this.reached = true;
        if (res.status !== 200 || !res.headers.get('rtgate-batch')) return this.refused(res);
        await this.#answer(res);
        let failingSince = 0;
        while (!this.done && this.session && !this.closeCode) {
            try {
                res = await this.fetch(`${this.base}/poll?ack=${this.batch}`, {
                    headers: { 'Rtgate-Session': this.session },
                    signal: this.abort.signal,
                    cache: 'no-store',
                });
            } catch {
                res = null;
            }
            if (this.done) return;
            if (res && res.status === 200) {
                failingSince = 0;
                await this.#answer(res);
                continue;
            }
            if (res && res.status !== 503) break; /* 404: the session ended; 409: out of step */
            await res?.arrayBuffer().catch(() => {});
            failingSince ||= Date.now();
            if (Date.now() - failingSince > this.pollGiveUpMs) break;
            await sleepMs(250, this.abort.signal);
        }
        this.finish({ code: this.closeCode || 1006, reason: this.closeReason || 'polling ended' });
    }

    async #answer(res) {
        const n = Number(res.headers.get('rtgate-batch'));
        const text = await res.text();
        if (!text) return;
        const msgs = decodeJsonFrame(text);
        if (!msgs) return this.sink.invalid(text);
        if (n > this.batch) this.batch = n;
        this.deliver(msgs);
    }
}

/* ------------------------------------------------------------------ */
/* The client. */

const DEFAULTS = {
    name: undefined,
    token: undefined,
    getToken: undefined,
    WebSocket: undefined,
    /* tried in this order: the first that runs here and opens is used */
    transports: [WebSocketTransport.create, SseTransport.create, LongPollTransport.create],
    httpUrl: undefined, /* the HTTP transports' base URL (default: from the WebSocket URL) */
    fetch: undefined, /* a fetch for the HTTP transports (default: the global one) */
    upgradeProbeMs: 30000, /* on a fallback transport, WebSocket is tried again (2 s, then this, doubling) */
    connectTimeoutMs: 10000, /* the HTTP transports: no gateway message within this is a failure */
    codec: 'json', /* or 'msgpack' (binary frames, bytes as bin) */
    reconnect: true,
    minReconnectDelayMs: 250,
    maxReconnectDelayMs: 15000,
    maxPending: 1000,
    maxBuffered: 10000,
    ackDelayMs: 20,
    geoRate: 10, /* the server's --geo-rate / --geo-burst defaults */
    geoBurst: 20,
    random: Math.random,
};

/* Frames stay under the server's limits: at most this many messages
 * (docs/protocol.md: more than 100 get 400) and max_message_bytes. */
const FRAME_MAX_MESSAGES = 50;
const DEFAULT_LIMITS = { pub_rate: 20, pub_burst: 40, max_message_bytes: 65536, max_subs: 256, max_unacked: 1024 };

/* A token bucket paced locally, so that a burst of publishes is spread out
 * instead of drawing 429s (which count toward the server's abuse limit). */
class Bucket {
    constructor(rate, burst) {
        this.rate = Math.max(rate, 0.001);
        this.burst = Math.max(burst, 1);
        this.tokens = this.burst;
        this.at = Date.now();
    }

    /* A bucket a little under the server's: one token and 5% of the rate
     * spare absorb the jitter between our sends and its arrivals. */
    static underServer(rate, burst) {
        return new Bucket(rate * 0.95, burst > 1 ? burst - 1 : burst);
    }

    refill(now) {
        this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) * this.rate) / 1000);
        this.at = now;
    }

    /* Takes a token, or returns the ms until one is there. */
    take(now) {
        this.refill(now);
        if (this.tokens >= 1) {
            this.tokens -= 1;
            return 0;
        }
        return Math.ceil(((1 - this.tokens) * 1000) / this.rate);
    }

    empty(now) {
        this.refill(now);
        this.tokens = 0;
    }
}

export class Client extends Emitter {
    #url;
    #opt;
    #state = 'idle';
    #transport = null;
    #connGen = 0; /* increments per connection attempt: stale callbacks compare */
    #attempt = 0; /* failed attempts since the last connected */
    #reconnectTimer = null;
    #afterMs = 0; /* the server's disconnect.after_ms for the next attempt */
    #stopReason = null;
    #info = null; /* the connected reply */
    #limits = { ...DEFAULT_LIMITS };
    #nextId = 1;
    #queue = []; /* requests waiting to be sent, in order */
    #order = 0; /* creation order of requests: retries go back in their place */
    #inflight = new Map(); /* id -> request sent on this connection */
    #userPending = 0; /* requests of the app in #queue or #inflight (maxPending) */
    #pubBucket = new Bucket(DEFAULT_LIMITS.pub_rate, DEFAULT_LIMITS.pub_burst);
    #geoBucket;
    #pausedUntil = 0; /* after a 429/503: nothing paced is sent before this */
    #pumpTimer = null;
    #outbox = [];
    #flushScheduled = false;
    #subs = new Map(); /* channel -> subscription record */
    #presence = new Map(); /* space -> {lat, lon, meta} */
    #watches = new Set();
    #watchById = new Map(); /* server watch id -> record, this connection */
    #inbox = []; /* deliveries waiting for their handler */
    #inboxRunning = false;
    #ackTimer = null;
    #unackedSinceAck = 0;
    #lastRx = 0;
    #pingSent = false;
    #heartbeatTimer = null;
    #connectWaiters = [];
    #transportIndex = 0; /* options.transports[i]: the one in use, or the next to try */
    #lastTransport = null; /* the name of the transport of the last connection */
    #probeTimer = null; /* on a fallback: when WebSocket is tried again */
    #probeDelayMs = 0;
    #openFailures = 0; /* of the transport at #transportIndex, in a row */
    stats = { connects: 0, duplicates: 0, dropped: 0, gaps: 0, resets: 0, retries: 0, rateLimited: 0 };

    #codec;

    constructor(url, options = {}) {
        super();
        this.#url = url;
        this.#opt = { ...DEFAULTS };
        for (const [k, v] of Object.entries(options)) if (v !== undefined) this.#opt[k] = v; /* undefined: the default */
        this.#codec = codecOf(this.#opt);
        this.#geoBucket = Bucket.underServer(this.#opt.geoRate, this.#opt.geoBurst);
    }

    /* 'idle', 'connecting', 'connected', 'disconnected' (will reconnect or
     * stopped: see the event's willReconnect) or 'closed' (after close()). */
    get state() {
        return this.#state;
    }

    /* The server's `connected` reply of the current session (client, user,
     * node, heartbeat_ms, limits), or null. */
    get session() {
        return this.#info;
    }

    get transport() {
        return this.#transport?.name || null;
    }

    /* Deliveries waiting for their handler (the inbox). */
    get buffered() {
        return this.#inbox.filter((it) => it.m).length;
    }

    /* Starts the session; resolves with the `connected` reply once
     * connected (at once if it is). Rejects when the client is closed or
     * the server refuses it for good (401 without getToken). */
    connect() {
        if (this.#state === 'connected') return Promise.resolve(this.#info);
        if (this.#state === 'closed') return Promise.reject(new RtgateError(0, 'closed', 'client is closed'));
        const p = new Promise((resolve, reject) => this.#connectWaiters.push({ resolve, reject }));
        if (this.#state === 'idle' || (this.#state === 'disconnected' && !this.#reconnectTimer)) {
            this.#stopReason = null;
            this.#open();
        }
        return p;
    }

    /* Ends the session for good: pending requests reject with 'closed'. */
    close() {
        if (this.#state === 'closed') return;
        this.#stopReason = 'closed';
        clearTimeout(this.#reconnectTimer);
        this.#reconnectTimer = null;
        const t = this.#transport;
        this.#transport = null;
        this.#connGen++;
        if (t) t.close(1000, 'client closed');
        this.#connectionEnded({ code: 1000, reason: 'client closed' }, false);
        this.#setState('closed', { reason: 'client closed', willReconnect: false });
        const err = new RtgateError(0, 'closed', 'client closed');
        for (const r of [...this.#queue, ...this.#inflight.values()]) r.reject?.(err);
        this.#queue = [];
        this.#inflight.clear();
        this.#userPending = 0;
        for (const s of this.#subs.values()) s.reject?.(err);
        this.#subs.clear();
        for (const w of this.#watches) w.reject?.(err);
        this.#watches.clear();
        this.#presence.clear();
        this.#inbox = [];
        for (const w of this.#connectWaiters.splice(0)) w.reject(err);
    }

    /* ---------------------------------------------------------------- */
    /* Connection life. */

    #setState(state, detail = {}) {
        this.#state = state;
        const ev = { state, ...detail };
        this.emit(state, ev);
        this.emit('state', ev);
    }

    async #open() {
        const gen = ++this.#connGen;
        this.#setState('connecting', { attempt: this.#attempt });
        let token = this.#opt.token;
        if (this.#opt.getToken) {
            try {
                token = await this.#opt.getToken();
            } catch (err) {
                if (gen !== this.#connGen) return;
                return this.#lost(gen, { code: 0, reason: 'getToken failed: ' + (err?.message || err) });
            }
            if (gen !== this.#connGen) return;
        }
        const transport = this.#makeTransport();
        if (!transport) return this.#fail('no transport available (no WebSocket nor fetch: pass options.WebSocket)');
        this.#transport = transport;
        transport.open({
            open: () => {
                if (gen !== this.#connGen) return;
                const hello = { type: 'connect', id: this.#nextId++ };
                if (token) hello.token = token;
                if (this.#opt.name) hello.name = this.#opt.name;
                this.#connectId = hello.id;
                this.#lastRx = Date.now();
                transport.send([hello]);
            },
            message: (m) => {
                if (gen === this.#connGen) this.#onMessage(m);
            },
            invalid: () => {
                if (gen === this.#connGen) this.emit('error', new RtgateError(0, 'bad_frame', 'unparseable frame from server'));
            },
            closed: (info) => {
                if (gen === this.#connGen) this.#lost(gen, info);
            },
        });
    }

    #connectId = 0;

    /* The first transport from #transportIndex on that can run here. */
    #makeTransport() {
        const list = this.#opt.transports;
        for (let k = 0; k < list.length; k++) {
            const i = (this.#transportIndex + k) % list.length;
            const t = list[i](this.#url, this.#opt);
            if (t) {
                this.#transportIndex = i;
                return t;
            }
        }
        return null;
    }

    /*
     * Two connections in a row that never opened (a WebSocket refused by a
     * proxy, a stream that got no gateway's message) send the next attempt
     * to the next transport in the list, and after the last back to the
     * first. An HTTP transport that reached nothing (no HTTP answer at all)
     * means the gateway is down rather than WebSocket blocked: back to the
     * first at once. A fallback that connects while WebSocket works after all
     * (the gateway came back between two tries) is moved back by the probe.
     */
    #fallBack(info) {
        if (info.opened !== false) {
            this.#openFailures = 0;
            return;
        }
        if (this.#transportIndex > 0 && info.reached === false) {
            /* a fallback that reached nothing at all: the gateway is down, WebSocket was not
             * blocked: back to the first transport */
            this.#transportIndex = this.#openFailures = 0;
            return;
        }
        /* Twice in a row: a browser cannot tell a WebSocket refused by a draining node
         * (the next try lands elsewhere) or a down gateway from one a proxy blocks. */
        if (++this.#openFailures < 2 || this.#opt.transports.length < 2) return;
        this.#openFailures = 0;
        this.#transportIndex = (this.#transportIndex + 1) % this.#opt.transports.length;
    }

    /*
     * On a fallback, WebSocket is tried again now and then (upgradeProbeMs,
     * doubling up to 10 minutes): a probe socket that opens means the path
     * is clear, and the session moves back to WebSocket (a reconnect: it
     * resumes, nothing is lost).
     */
    #scheduleProbe() {
        clearTimeout(this.#probeTimer);
        this.#probeTimer = null;
        const first = this.#opt.transports[0];
        const WS = this.#opt.WebSocket || globalThis.WebSocket;
        if (this.#transportIndex === 0 || first !== WebSocketTransport.create || !WS || !this.#opt.upgradeProbeMs) return;
        /* The first probe comes soon (the fallback may be a gateway restart's accident),
         * then every upgradeProbeMs, doubling up to 10 minutes. */
        this.#probeDelayMs = this.#probeDelayMs ? Math.min(600000, Math.max(this.#probeDelayMs * 2, this.#opt.upgradeProbeMs)) : 2000;
        const gen = this.#connGen;
        this.#probeTimer = setTimeout(() => {
            this.#probeTimer = null;
            if (gen !== this.#connGen || this.#state !== 'connected') return;
            let ws;
            try {
                ws = new WS(this.#url, [this.#codec.subprotocol]);
            } catch {
                return this.#scheduleProbe();
            }
            const done = (ok) => {
                ws.onopen = ws.onerror = ws.onclose = null;
                try {
                    ws.close(1000, '');
                } catch {
                    /* a socket that never opened */
                }
                if (gen !== this.#connGen || this.#state !== 'connected') return;
                if (!ok) return this.#scheduleProbe();
                this.#transportIndex = 0;
                this.#probeDelayMs = 0;
                this.#transport?.close(1000, 'moving to websocket');
            };
            ws.onopen = () => done(true);
            ws.onerror = ws.onclose = () => done(false);
        }, this.#probeDelayMs);
        this.#probeTimer.unref?.();
    }

    #onConnected(reply) {
        this.#info = reply;
        this.#limits = { ...DEFAULT_LIMITS, ...(reply.limits || {}) };
        this.#pubBucket = Bucket.underServer(this.#limits.pub_rate, this.#limits.pub_burst);
        this.#geoBucket = Bucket.underServer(this.#opt.geoRate, this.#opt.geoBurst);
        this.#pausedUntil = 0;
        const resumed = this.stats.connects > 0;
        this.stats.connects++;
        this.#attempt = 0;
        this.#afterMs = 0;
        this.#startHeartbeat(reply.heartbeat_ms || 25000);
        this.#scheduleRefresh(reply.expires_in_ms);
        const previous = this.#lastTransport;
        this.#lastTransport = this.transport;
        if (previous !== this.transport) this.emit('transport', { transport: this.transport, previous });
        if (this.#transportIndex === 0) this.#probeDelayMs = 0;
        this.#scheduleProbe();
        this.#setState('connected', { client: reply.client, user: reply.user, node: reply.node, resumed, transport: this.transport });
        for (const w of this.#connectWaiters.splice(0)) w.resolve(reply);
        /* Restore the session first: subscriptions (resuming), presence,
         * watches; then the requests that waited, in their order. */
        const waiting = this.#queue;
        this.#queue = [];
        for (const sub of this.#subs.values()) this.#sendSub(sub);
        for (const [space, pos] of this.#presence) {
            if (!waiting.some((r) => r.type === 'geo.set' && r.msg.space === space))
                this.#request({ type: 'geo.set', space, ...pos.msg }, { internal: true, paced: 'geo' });
        }
        for (const w of this.#watches) this.#sendWatch(w);
        this.#queue.push(...waiting);
        this.#pump();
    }

    /* The connection ended (or never opened): requeue what was in flight,
     * then reconnect after a backoff unless stopped. */
    #lost(gen, info) {
        if (gen !== this.#connGen) return;
        this.#connGen++;
        this.#transport = null;
        const wasConnected = this.#state === 'connected';
        this.#fallBack(wasConnected ? { opened: true } : info);
        if (info.retryAfterMs) this.#afterMs = Math.max(this.#afterMs, info.retryAfterMs);
        this.#connectionEnded(info, wasConnected);
        if (this.#stopReason || !this.#opt.reconnect) {
            this.#setState('disconnected', { ...info, willReconnect: false });
            const err = new RtgateError(info.code || 0, this.#stopReason || 'disconnected', info.reason);
            for (const w of this.#connectWaiters.splice(0)) w.reject(err);
            return;
        }
        this.#attempt = wasConnected ? 0 : this.#attempt + 1;
        const cap = Math.min(this.#opt.maxReconnectDelayMs, this.#opt.minReconnectDelayMs * 2 ** Math.min(this.#attempt, 20));
        const jitter = Math.floor(this.#opt.random() * cap); /* full jitter */
        const delayMs = Math.max(this.#afterMs, jitter);
        this.#afterMs = 0;
        this.#setState('disconnected', { code: info.code, reason: info.reason, willReconnect: true, delayMs });
        clearTimeout(this.#reconnectTimer);
        this.#reconnectTimer = setTimeout(() => {
            this.#reconnectTimer = null;
            if (this.#state === 'disconnected') this.#open();
        }, delayMs);
    }

    /* Stops for good with a reason (the server refused us). */
    #fail(reason, code = 0) {
        this.#stopReason = reason;
        const t = this.#transport;
        if (t) t.close(1000, '');
        else this.#lost(this.#connGen, { code, reason });
    }

    #connectionEnded(info, wasConnected) {
        this.#info = null;
        clearTimeout(this.#probeTimer);
        this.#probeTimer = null;
        clearTimeout(this.#refreshTimer);
        this.#refreshTimer = null;
        this.#stopHeartbeat();
        clearTimeout(this.#pumpTimer);
        this.#pumpTimer = null;
        clearTimeout(this.#ackTimer);
        this.#ackTimer = null;
        this.#outbox = [];
        this.#watchById.clear();
        /* Durable deliveries not yet handed to their handler are dropped:
         * the resume asks for them again (since = the last seq handled, or
         * being handled), so the inbox never holds more than one
         * connection's unacked window of them, however often it reconnects
         * under a stuck handler. Gaps are reported again by the server if
         * they still stand. */
        this.#inbox = this.#inbox.filter((it) => !(it.m && typeof it.m.seq === 'number') && !it.gap);
        for (const sub of this.#subs.values()) {
            sub.active = false;
            if (sub.replaying) sub.seenSeq = sub.doneSeq = 0; /* the replay is still owed */
            else if (sub.durable && sub.seenSeq !== null)
                sub.seenSeq = Math.max(sub.doneSeq ?? 0, sub.handlingSeq ?? 0);
            sub.replaying = false;
        }
        /* In-flight requests go back to the head of the queue in their
         * order; internal ones are rebuilt from state on the next connect. */
        const back = [];
        for (const r of [...this.#inflight.values()].sort((a, b) => a.id - b.id)) {
            if (r.internal) continue;
            if (r.type === 'geo.clear' || r.type === 'geo.unwatch' || r.type === 'unsub') {
                /* the connection's presence, watches and subscriptions died with it */
                this.#settle(r, () => r.resolve({ ok: true }));
                continue;
            }
            if (r.type === 'pub') this.stats.retries++;
            back.push(r);
        }
        this.#inflight.clear();
        this.#queue = [...back, ...this.#queue.filter((r) => !r.internal)];
        if (wasConnected) this.emit('lost', info);
    }

    #startHeartbeat(heartbeatMs) {
        this.#stopHeartbeat();
        const every = Math.max(1000, Math.floor(heartbeatMs / 2));
        this.#heartbeatTimer = setInterval(() => {
            const quiet = Date.now() - this.#lastRx;
            if (quiet > heartbeatMs * 2 + 5000) {
                /* half-open: nothing, not even a pong, for two heartbeats */
                this.#transport?.close(4000, 'heartbeat timeout');
            } else if (quiet > heartbeatMs && !this.#pingSent) {
                this.#pingSent = true;
                this.#enqueueRaw({ type: 'ping' });
            }
        }, every);
        this.#heartbeatTimer.unref?.();
    }

    /*
     * A token with an expiry (the server says expires_in_ms) is replaced
     * before it runs out, at 80% of its life, with a `refresh` carrying a
     * new one from getToken: no reconnect. If that fails, the server closes
     * with 4001 token_expired at expiry and the reconnect gets a new token.
     */
    #refreshTimer = null;

    #scheduleRefresh(expiresInMs) {
        clearTimeout(this.#refreshTimer);
        this.#refreshTimer = null;
        if (!this.#opt.getToken || typeof expiresInMs !== 'number') return;
        const gen = this.#connGen;
        this.#refreshTimer = setTimeout(async () => {
            this.#refreshTimer = null;
            let token;
            try {
                token = await this.#opt.getToken();
            } catch (err) {
                this.emit('error', new RtgateError(0, 'refresh_failed', 'getToken failed: ' + (err?.message || err)));
                return;
            }
            if (gen !== this.#connGen || this.#state !== 'connected') return;
            this.#request({ type: 'refresh', token }, {
                internal: true,
                onReply: (reply, err) => {
                    if (err) return this.emit('error', Object.assign(err, { refresh: true }));
                    this.emit('refreshed', { expiresInMs: reply.expires_in_ms });
                    this.#scheduleRefresh(reply.expires_in_ms);
                },
            });
        }, Math.max(1000, Math.floor(expiresInMs * 0.8)));
        this.#refreshTimer.unref?.();
    }

    #stopHeartbeat() {
        clearInterval(this.#heartbeatTimer);
        this.#heartbeatTimer = null;
        this.#pingSent = false;
    }

    /* ---------------------------------------------------------------- */
    /* Outgoing: requests, pacing, frames. */

    /* Queues a request; returns its record (with .promise unless internal). */
    #request(msg, { internal = false, paced = null, onReply = null } = {}) {
        const r = { type: msg.type, msg, internal, paced, onReply, id: 0, order: this.#order++ };
        if (!internal) {
            if (this.#state === 'closed') return { promise: Promise.reject(new RtgateError(0, 'closed', 'client is closed')) };
            if (this.#userPending >= this.#opt.maxPending)
                return { promise: Promise.reject(new RtgateError(0, 'queue_full', `more than ${this.#opt.maxPending} requests pending`)) };
            this.#userPending++;
            r.promise = new Promise((resolve, reject) => {
                r.resolve = resolve;
                r.reject = reject;
            });
        }
        this.#queue.push(r);
        this.#autoConnect();
        this.#pump();
        return r;
    }

    /* The first request of an idle client connects it. */
    #autoConnect() {
        if (this.#state === 'idle') this.connect().catch(() => {});
    }

    /* Puts a refused request back in the queue in its creation order. */
    #requeue(r) {
        const at = this.#queue.findIndex((q) => q.order > r.order);
        if (at < 0) this.#queue.push(r);
        else this.#queue.splice(at, 0, r);
    }

    /* Resolves or rejects a request once, and releases its pending slot. */
    #settle(r, fn) {
        if (r.settled) return;
        r.settled = true;
        if (!r.internal) this.#userPending--;
        fn();
    }

    /* Sends what the queue allows now: in order, paced requests waiting for
     * their bucket (and everything behind them, to keep the order). */
    #pump() {
        if (this.#state !== 'connected' || !this.#transport) return;
        const now = Date.now();
        while (this.#queue.length) {
            const r = this.#queue[0];
            let waitMs = 0;
            if (r.paced) {
                waitMs = Math.max(0, this.#pausedUntil - now);
                if (!waitMs && r.paced !== 'wait') waitMs = (r.paced === 'geo' ? this.#geoBucket : this.#pubBucket).take(now);
            }
            if (waitMs) {
                if (!this.#pumpTimer)
                    this.#pumpTimer = setTimeout(() => {
                        this.#pumpTimer = null;
                        this.#pump();
                    }, waitMs);
                break;
            }
            this.#queue.shift();
            r.id = this.#nextId++;
            this.#inflight.set(r.id, r);
            this.#enqueueRaw({ ...r.msg, id: r.id });
        }
    }

    #enqueueRaw(msg) {
        this.#outbox.push(msg);
        if (!this.#flushScheduled) {
            this.#flushScheduled = true;
            queueMicrotask(() => this.#flush());
        }
    }

    /* Sends the outbox as few frames as the server's limits allow. */
    #flush() {
        this.#flushScheduled = false;
        if (!this.#transport || !this.#outbox.length) return;
        const messages = this.#outbox;
        this.#outbox = [];
        this.#transport.send(messages, { maxBytes: this.#limits.max_message_bytes, maxMessages: FRAME_MAX_MESSAGES });
    }

    /* ---------------------------------------------------------------- */
    /* Incoming. */

    #onMessage(m) {
        this.#lastRx = Date.now();
        this.#pingSent = false;
        switch (m.type) {
            case 'msg':
                return this.#onDelivery(m);
            case 'reply':
                return this.#onReply(m);
            case 'connected':
                if (m.id === this.#connectId && this.#state === 'connecting') this.#onConnected(m);
                return;
            case 'geo':
                return this.#onGeoEvent(m);
            case 'gap':
                return this.#onGap(m);
            case 'disconnect':
                /* The server closes next; honour its reconnect delay. */
                /* A refused token says reconnect:false; with getToken a new
                 * token may do, so the client tries again (with backoff). */
                if (m.reconnect === false && !(m.code === 4001 && this.#opt.getToken))
                    this.#stopReason = m.reason || 'disconnected by server';
                this.#afterMs = Math.max(0, Number(m.after_ms) || 0);
                this.emit('server-disconnect', m);
                return;
            case 'error':
                this.emit('error', errorFromReply(m));
                return;
            case 'pong':
            default:
                return;
        }
    }

    #onReply(m) {
        if (m.id === this.#connectId && this.#state === 'connecting') {
            /* connect refused: 401 is a bad or expired token */
            const err = errorFromReply(m);
            if (err.code === 401 && !this.#opt.getToken) return this.#fail('unauthorized', 401);
            if (err.code === 429 || err.code === 503) this.#afterMs = err.retryAfterMs || 0;
            this.emit('error', err);
            this.#transport?.close(1000, '');
            return;
        }
        const r = this.#inflight.get(m.id);
        if (!r) return;
        this.#inflight.delete(m.id);
        if (!m.ok) {
            const err = errorFromReply(m);
            if (err.code === 429 || err.code === 503) {
                /* wait as told, then send it again (a pub keeps its msg_id) */
                this.stats.rateLimited++;
                const wait = err.retryAfterMs || 1000;
                this.#pausedUntil = Math.max(this.#pausedUntil, Date.now() + wait);
                if (r.paced === 'geo') this.#geoBucket.empty(Date.now());
                else if (r.paced) this.#pubBucket.empty(Date.now());
                if (!r.paced) r.paced = 'wait';
                this.#requeue(r);
                this.#pump();
                return;
            }
            if (r.onReply) return r.onReply(m, err);
            this.#settle(r, () => r.reject?.(err));
            return;
        }
        if (r.onReply) return r.onReply(m, null);
        const { type, id, ok, ...result } = m; /* the reply's own fields */
        this.#settle(r, () => r.resolve?.(result));
    }

    /* ---------------------------------------------------------------- */
    /* Subscriptions. */

    /*
     * Subscribes handler(data, info) to a channel; resolves with a
     * Subscription once the server accepted it. options: since/epoch (resume
     * from a position the app kept), history (deliver what the channel
     * retains first), replayOnReset (after recovered:false, deliver what
     * the new incarnation retains), onGap({from, to}), onReset({reason,
     * epoch}).
     */
    subscribe(channel, handler, options = {}) {
        if (this.#state === 'closed') return Promise.reject(new RtgateError(0, 'closed', 'client is closed'));
        if (this.#subs.has(channel)) return Promise.reject(new RtgateError(409, 'conflict', 'already subscribed to ' + channel));
        const sub = {
            channel,
            handler,
            options,
            durable: null,
            epoch: options.epoch ?? null,
            seenSeq: options.since ?? null, /* highest seq received (dedup, resume) */
            doneSeq: options.since ?? null, /* highest seq handled (acks) */
            ackedSeq: 0,
            active: false,
            accepted: false,
            handle: null,
        };
        const promise = new Promise((resolve, reject) => {
            sub.resolve = resolve;
            sub.reject = reject;
        });
        sub.handle = new Subscription(this, sub);
        this.#subs.set(channel, sub);
        this.#autoConnect();
        if (this.#state === 'connected') this.#sendSub(sub);
        return promise;
    }

    /* Resolves once the server dropped it (at once when not connected). */
    unsubscribe(channel) {
        const sub = this.#subs.get(channel);
        if (!sub) return Promise.resolve({ ok: true });
        this.#subs.delete(channel);
        this.#inbox = this.#inbox.filter((it) => it.sub !== sub);
        if (!sub.active) {
            sub.reject?.(new RtgateError(0, 'unsubscribed', 'unsubscribed before the server accepted it'));
            return Promise.resolve({ ok: true });
        }
        return this.#request({ type: 'unsub', channel }).promise;
    }

    #sendSub(sub) {
        const msg = { type: 'sub', channel: sub.channel };
        const resuming = sub.seenSeq !== null && sub.durable !== false;
        if (resuming) {
            msg.since = sub.seenSeq;
            if (sub.epoch !== null) msg.epoch = sub.epoch;
        }
        this.#request(msg, { internal: true, onReply: (reply, err) => this.#onSubReply(sub, resuming, reply, err) });
    }

    #onSubReply(sub, resumed, reply, err, replayed = false) {
        if (this.#subs.get(sub.channel) !== sub) return;
        if (err) {
            if (resumed && err.code === 400) {
                /* a position this channel cannot resume from: start again live */
                sub.seenSeq = sub.doneSeq = null;
                sub.epoch = null;
                this.#reset(sub, { reason: 'bad_position', epoch: null });
                this.#sendSub(sub);
                return;
            }
            this.#subs.delete(sub.channel);
            if (!sub.accepted) sub.reject(err);
            else this.emit('error', Object.assign(err, { channel: sub.channel }));
            return;
        }
        sub.active = true;
        sub.durable = !!reply.durable;
        if (sub.durable) {
            if (resumed && reply.recovered === false) {
                this.#reset(sub, { reason: 'not_recovered', epoch: reply.epoch });
                sub.seenSeq = sub.doneSeq = reply.seq ?? 0;
                if (sub.options.replayOnReset && sub.seenSeq > 0 && !replayed) this.#replayFromStart(sub, reply.epoch);
            } else if (sub.seenSeq === null) {
                sub.seenSeq = sub.doneSeq = reply.seq ?? 0;
                if (sub.options.history && sub.seenSeq > 0 && !replayed) this.#replayFromStart(sub, reply.epoch);
            }
            sub.epoch = reply.epoch ?? null;
            sub.ackedSeq = 0;
        } else {
            sub.seenSeq = sub.doneSeq = null; /* ephemeral: nothing to resume */
        }
        if (!sub.accepted) {
            sub.accepted = true;
            sub.resolve(sub.handle);
        }
    }

    /*
     * Reads the channel's whole retained history: for history:true on the
     * first subscribe, and for replayOnReset in the new incarnation (e.g.
     * what was published since a memory-engine gateway restarted).
     * The unsub and the sub from 0 go out together; the server answers in
     * order, so whatever arrives before the unsub's reply belongs to the
     * old subscription and is dropped (the replay brings it again).
     */
    #replayFromStart(sub, epoch) {
        sub.replaying = true;
        this.#request({ type: 'unsub', channel: sub.channel }, {
            internal: true,
            onReply: () => {
                if (this.#subs.get(sub.channel) !== sub) return;
                sub.replaying = false;
                sub.seenSeq = sub.doneSeq = 0;
            },
        });
        const msg = { type: 'sub', channel: sub.channel, since: 0, epoch };
        this.#request(msg, { internal: true, onReply: (r, e) => this.#onSubReply(sub, true, r, e, true) });
    }

    /* The history after our position is gone (or the epoch changed): what
     * is buffered belongs to the old numbering; the app must reload. */
    #reset(sub, detail) {
        this.stats.resets++;
        sub.numbering = (sub.numbering || 0) + 1; /* a handler still running belongs to the old one */
        sub.handlingSeq = null;
        this.#inbox = this.#inbox.filter((it) => it.sub !== sub);
        const ev = { channel: sub.channel, ...detail };
        this.#deliverControl(sub, false, () => {
            sub.options.onReset?.(ev);
            this.emit('reset', ev);
        });
    }

    #onDelivery(m) {
        const sub = this.#subs.get(m.channel);
        if (!sub || sub.replaying) return;
        const durable = typeof m.seq === 'number';
        if (durable) {
            if (sub.seenSeq !== null && m.seq <= sub.seenSeq) {
                this.stats.duplicates++;
                return;
            }
            sub.seenSeq = m.seq;
        } else if (this.#inbox.length >= this.#opt.maxBuffered) {
            this.stats.dropped++; /* ephemeral: best effort, bounded buffer */
            return;
        }
        this.#inbox.push({ sub, m });
        this.#runInbox();
    }

    #onGap(m) {
        const sub = this.#subs.get(m.channel);
        if (!sub) return;
        this.stats.gaps++;
        if (sub.seenSeq === null || m.to > sub.seenSeq) sub.seenSeq = m.to;
        const ev = { channel: m.channel, from: m.from, to: m.to };
        this.#deliverControl(sub, true, () => {
            if (sub.doneSeq === null || m.to > sub.doneSeq) sub.doneSeq = m.to;
            sub.options.onGap?.(ev);
            this.emit('gap', ev);
            this.#scheduleAck(sub, false);
        });
    }

    /* Runs fn in the delivery order of the subscription's messages. */
    #deliverControl(sub, gap, fn) {
        this.#inbox.push({ sub, control: fn, gap });
        this.#runInbox();
    }

    /* Calls handlers one message at a time, waiting for an async handler
     * before the next; acks each durable message after its handler. */
    async #runInbox() {
        if (this.#inboxRunning) return;
        this.#inboxRunning = true;
        try {
            while (this.#inbox.length) {
                const it = this.#inbox.shift();
                const sub = it.sub;
                if (this.#subs.get(sub.channel) !== sub) continue;
                if (it.control) {
                    try {
                        it.control();
                    } catch (err) {
                        reportAppError(err);
                    }
                    continue;
                }
                const m = it.m;
                const info = { channel: m.channel, seq: m.seq, msgId: m.msg_id, ts: m.ts };
                let data = m.data;
                if (m.data_b64 !== undefined) {
                    data = fromBase64(m.data_b64);
                    info.binary = true;
                } else if (data instanceof Uint8Array) {
                    info.binary = true; /* msgpack bin */
                }
                const numbering = sub.numbering;
                if (typeof m.seq === 'number') sub.handlingSeq = m.seq;
                try {
                    const ret = sub.handler(data, info);
                    if (ret && typeof ret.then === 'function') await ret;
                } catch (err) {
                    /* the app saw the message: it is acked all the same */
                    this.emit('handler-error', { error: err, ...info });
                    if (!this.listenerCount('handler-error')) reportAppError(err);
                }
                if (typeof m.seq === 'number' && this.#subs.get(sub.channel) === sub && sub.numbering === numbering) {
                    sub.handlingSeq = null;
                    if (sub.doneSeq === null || m.seq > sub.doneSeq) sub.doneSeq = m.seq;
                    this.#scheduleAck(sub, true);
                }
            }
        } finally {
            this.#inboxRunning = false;
        }
    }

    /* Acks are cumulative and coalesced: one per channel every ackDelayMs,
     * at once when a quarter of the server's window is waiting. */
    #scheduleAck(sub, counted) {
        if (counted) this.#unackedSinceAck++;
        sub.ackDue = true;
        if (this.#unackedSinceAck >= this.#limits.max_unacked / 4) return this.#sendAcks();
        if (!this.#ackTimer) this.#ackTimer = setTimeout(() => this.#sendAcks(), this.#opt.ackDelayMs);
    }

    #sendAcks() {
        clearTimeout(this.#ackTimer);
        this.#ackTimer = null;
        if (this.#state !== 'connected') return;
        this.#unackedSinceAck = 0;
        for (const sub of this.#subs.values()) {
            if (!sub.ackDue || !sub.active) continue;
            sub.ackDue = false;
            if (sub.doneSeq > sub.ackedSeq) {
                sub.ackedSeq = sub.doneSeq;
                this.#enqueueRaw({ type: 'ack', channel: sub.channel, seq: sub.doneSeq });
            }
        }
    }

    /* ---------------------------------------------------------------- */
    /* Publishing. */

    /*
     * Publishes data (any JSON value, or bytes as Uint8Array/ArrayBuffer)
     * and resolves with the reply ({seq, dup, msgId}). The msg_id (given or
     * generated) makes retries across reconnects idempotent: the request is
     * sent again until answered, and the server answers a repeat with the
     * original seq and dup:true. Publishes go out in call order, paced to
     * the pub_rate the server announced; only when the server still refuses
     * one (429/503) while later ones are in flight can those overtake it:
     * await each publish when strict order matters across such refusals.
     */
    publish(channel, data, options = {}) {
        const msgId = options.msgId ?? randomId();
        const msg = { type: 'pub', channel, msg_id: msgId };
        const bytes = asBytes(data);
        if (bytes && !this.#codec.bytesInData) msg.data_b64 = toBase64(bytes);
        else msg.data = bytes || (data === undefined ? null : data);
        let size;
        try {
            size = this.#codec.size(this.#codec.encode({ ...msg, id: 2 ** 31 }));
        } catch (err) {
            return Promise.reject(err instanceof RtgateError ? err : new RtgateError(400, 'bad_request', err.message));
        }
        if (size > this.#limits.max_message_bytes)
            return Promise.reject(new RtgateError(413, 'too_large', `message of ${size} bytes is over max_message_bytes`));
        const r = this.#request(msg, { paced: 'pub' });
        return r.promise.then((reply) => ({ ...reply, msgId }));
    }

    /* ---------------------------------------------------------------- */
    /* Presence. */

    /* Places this client in a space; kept and restored after reconnects.
     * Calls before the previous one is sent replace it (latest wins). */
    geoSet(space, { lat, lon, meta } = {}) {
        const pos = { msg: meta === undefined ? { lat, lon } : { lat, lon, meta } };
        this.#presence.set(space, pos);
        const queued = this.#queue.find((r) => r.type === 'geo.set' && r.msg.space === space && !r.internal);
        if (queued) {
            queued.msg = { type: 'geo.set', space, ...pos.msg };
            return queued.promise;
        }
        return this.#request({ type: 'geo.set', space, ...pos.msg }, { paced: 'geo' }).promise;
    }

    geoClear(space) {
        this.#presence.delete(space);
        this.#queue = this.#queue.filter((r) => {
            if (r.type !== 'geo.set' || r.msg.space !== space || r.internal) return true;
            this.#settle(r, () => r.resolve({ ok: true, cleared: true }));
            return false;
        });
        if (this.#state !== 'connected') return Promise.resolve({ ok: true });
        return this.#request({ type: 'geo.clear', space }).promise;
    }

    /* Members within radius_m of a point, nearest first (the reply). */
    near(space, { lat, lon, radius_m, limit } = {}) {
        const msg = { type: 'geo.near', space, lat, lon, radius_m };
        if (limit !== undefined) msg.limit = limit;
        return this.#request(msg).promise;
    }

    /*
     * Watches a circle: handler(event, member) gets 'join' for each member
     * in it when the watch starts, then join/move/leave as they change;
     * after a reconnect the differences are reported the same way. Resolves
     * with a Watch (members, update(), unwatch()).
     */
    watch(space, { lat, lon, radius_m, limit } = {}, handler = () => {}) {
        if (this.#state === 'closed') return Promise.reject(new RtgateError(0, 'closed', 'client is closed'));
        const w = { space, area: { lat, lon, radius_m, limit }, handler, serverId: null, members: new Map(), started: false };
        const promise = new Promise((resolve, reject) => {
            w.resolve = resolve;
            w.reject = reject;
        });
        w.handle = new Watch(this, w);
        this.#watches.add(w);
        this.#autoConnect();
        if (this.#state === 'connected') this.#sendWatch(w);
        return promise;
    }

    #sendWatch(w) {
        const a = w.area;
        const msg = { type: 'geo.watch', space: w.space, lat: a.lat, lon: a.lon, radius_m: a.radius_m };
        if (a.limit !== undefined) msg.limit = a.limit;
        const gen = (w.gen = (w.gen || 0) + 1);
        this.#request(msg, {
            internal: true,
            onReply: (reply, err) => {
                if (!this.#watches.has(w) || w.gen !== gen) {
                    if (!err && reply.watch) this.#enqueueRaw({ type: 'geo.unwatch', id: this.#nextId++, watch: reply.watch });
                    return;
                }
                if (err) {
                    this.#watches.delete(w);
                    if (!w.started) w.reject(err);
                    else this.emit('error', Object.assign(err, { space: w.space }));
                    return;
                }
                w.serverId = reply.watch;
                this.#watchById.set(reply.watch, w);
                this.#syncMembers(w, reply.members || []);
                if (!w.started) {
                    w.started = true;
                    w.resolve(w.handle);
                }
            },
        });
    }

    /* Reports the difference between what the watch knew and a full list. */
    #syncMembers(w, members) {
        const now = new Map(members.map((m) => [m.client, m]));
        for (const [id, old] of w.members) if (!now.has(id)) this.#geoEvent(w, 'leave', old);
        for (const [id, m] of now) {
            const old = w.members.get(id);
            if (!old) this.#geoEvent(w, 'join', m);
            else if (old.lat !== m.lat || old.lon !== m.lon || JSON.stringify(old.meta) !== JSON.stringify(m.meta))
                this.#geoEvent(w, 'move', m);
        }
    }

    #geoEvent(w, event, member) {
        if (event === 'leave') w.members.delete(member.client);
        else w.members.set(member.client, member);
        try {
            w.handler(event, member);
        } catch (err) {
            reportAppError(err);
        }
    }

    #onGeoEvent(m) {
        const w = this.#watchById.get(m.watch);
        if (w && this.#watches.has(w) && m.member) this.#geoEvent(w, m.event, m.member);
    }

    /* Watch.update / Watch.unwatch. */
    _rewatch(w, area) {
        Object.assign(w.area, area);
        this.#dropServerWatch(w);
        if (this.#state === 'connected') this.#sendWatch(w);
        return new Promise((resolve) => {
            const check = () => (w.serverId || !this.#watches.has(w) ? resolve(w.handle) : setTimeout(check, 10));
            check();
        });
    }

    _unwatch(w) {
        this.#watches.delete(w);
        return this.#dropServerWatch(w);
    }

    #dropServerWatch(w) {
        const id = w.serverId;
        w.serverId = null;
        w.gen = (w.gen || 0) + 1;
        if (!id || this.#state !== 'connected') return Promise.resolve({ ok: true });
        this.#watchById.delete(id);
        return this.#request({ type: 'geo.unwatch', watch: id }).promise.catch(() => ({ ok: true }));
    }
}

/* A subscription accepted by the server. */
export class Subscription {
    #client;
    #sub;
    constructor(client, sub) {
        this.#client = client;
        this.#sub = sub;
        this.channel = sub.channel;
    }

    get durable() {
        return this.#sub.durable;
    }

    /* The position to resume from later ({since, epoch}), e.g. after a
     * page reload: pass it to subscribe's options. */
    get position() {
        return { since: this.#sub.doneSeq, epoch: this.#sub.epoch };
    }

    unsubscribe() {
        return this.#client.unsubscribe(this.channel);
    }
}

/* A live geo.watch. members: Map of client id -> member. */
export class Watch {
    #client;
    #w;
    constructor(client, w) {
        this.#client = client;
        this.#w = w;
        this.space = w.space;
    }

    get members() {
        return this.#w.members;
    }

    get area() {
        return { ...this.#w.area };
    }

    /* Moves or resizes the circle (a new server watch; differences are
     * reported to the handler). */
    update(area) {
        return this.#client._rewatch(this.#w, area);
    }

    unwatch() {
        return this.#client._unwatch(this.#w);
    }
}

export default Client;
