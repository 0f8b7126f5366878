// Types of rtgate.js, the JavaScript client of rtgate (protocol v1).

export const VERSION: string;
export const SUBPROTOCOL_JSON: 'rtgate.v1.json';
export const SUBPROTOCOL_MSGPACK: 'rtgate.v1.msgpack';

/** Turns protocol messages into frames and back. */
export interface Codec {
    readonly name: string;
    readonly subprotocol: string;
    /** frames are bytes */
    readonly binary: boolean;
    /** binary data travels as bytes in `data` (else base64 in `data_b64`) */
    readonly bytesInData: boolean;
    encode(msg: Record<string, unknown>): string | Uint8Array;
    size(encoded: string | Uint8Array): number;
    join(encoded: (string | Uint8Array)[]): string | Uint8Array;
    decode(frame: string | ArrayBuffer | Uint8Array): Record<string, unknown>[] | null;
}
export const jsonCodec: Codec;
export const msgpackCodec: Codec;
export function msgpackEncode(value: unknown): Uint8Array;
export function msgpackDecodeAll(bytes: Uint8Array | ArrayBuffer): unknown[];

/** An error answered by the server (code 400..503) or raised by the library
 * (code 0 with a reason such as 'closed', 'queue_full'; 413 'too_large'). */
export class RtgateError extends Error {
    code: number;
    reason: string;
    retryAfterMs?: number;
    channel?: string;
}

export type State = 'idle' | 'connecting' | 'connected' | 'disconnected' | 'closed';

export interface Limits {
    pub_rate: number;
    pub_burst: number;
    max_message_bytes: number;
    max_subs: number;
    max_unacked: number;
    [k: string]: unknown;
}

/** The server's `connected` reply. */
export interface SessionInfo {
    type: 'connected';
    /** HTTP transports: 'sse' or 'longpoll', and the session's token for POST /send. */
    transport?: string;
    session?: string;
    id: number;
    client: string;
    user: string;
    node: string;
    heartbeat_ms: number;
    limits: Limits;
    expires_in_ms?: number;
    [k: string]: unknown;
}

export interface StateEvent {
    state: State;
    /** connecting: failed attempts since the last connection */
    attempt?: number;
    /** connected */
    client?: string;
    user?: string;
    node?: string;
    resumed?: boolean;
    transport?: string | null;
    /** disconnected / closed */
    code?: number;
    reason?: string;
    willReconnect?: boolean;
    delayMs?: number;
}

/** What a transport reports to the client. */
export interface TransportSink {
    open(): void;
    message(msg: Record<string, unknown>): void;
    invalid(frame: unknown): void;
    /** opened: false when it never got through (the client then falls back);
     * reached: false when no HTTP answer came at all (the gateway is down);
     * retryAfterMs: the least wait before the next attempt. */
    closed(info: { code: number; reason: string; local?: boolean; opened?: boolean; reached?: boolean; retryAfterMs?: number }): void;
}

/** One connection carrying protocol messages (plain objects). */
export interface Transport {
    readonly name: string;
    open(sink: TransportSink): void;
    /** Frames the messages within the limits and sends them; false when not open. */
    send(messages: Record<string, unknown>[], limits?: { maxBytes?: number; maxMessages?: number }): boolean;
    close(code?: number, reason?: string): void;
}

/** Makes a transport for a URL, or null when it cannot run here. */
export type TransportFactory = (url: string, options: ClientOptions) => Transport | null;

export class WebSocketTransport implements Transport {
    static create: TransportFactory;
    readonly name: 'websocket';
    open(sink: TransportSink): void;
    send(messages: Record<string, unknown>[], limits?: { maxBytes?: number; maxMessages?: number }): boolean;
    close(code?: number, reason?: string): void;
}

/** Server-Sent Events read with fetch (no EventSource), requests by POST /send. JSON only. */
export class SseTransport implements Transport {
    static create: TransportFactory;
    readonly name: 'sse';
    open(sink: TransportSink): void;
    send(messages: Record<string, unknown>[], limits?: { maxBytes?: number; maxMessages?: number }): boolean;
    close(code?: number, reason?: string): void;
}

/** Long-polling with numbered batches, requests by POST /send. JSON only. */
export class LongPollTransport implements Transport {
    static create: TransportFactory;
    readonly name: 'longpoll';
    open(sink: TransportSink): void;
    send(messages: Record<string, unknown>[], limits?: { maxBytes?: number; maxMessages?: number }): boolean;
    close(code?: number, reason?: string): void;
}

export interface ClientOptions {
    /** 'json' (default: rtgate.v1.json, text frames) or 'msgpack' (rtgate.v1.msgpack, binary frames, bytes as bin). */
    codec?: 'json' | 'msgpack' | Codec;
    /** A label sent in `connect`. */
    name?: string;
    /** A fixed JWT for `connect`. */
    token?: string;
    /** Called before each connect and before the token expires (refresh). */
    getToken?: () => string | undefined | Promise<string | undefined>;
    /** A WebSocket constructor (e.g. the `ws` package's) where there is no global one. */
    WebSocket?: unknown;
    /** Tried in order; the first that runs here (and opens) is used.
     * Default: WebSocket, then Server-Sent Events, then long-polling. */
    transports?: TransportFactory[];
    /** The HTTP transports' base URL (default: http(s)://host of the WebSocket URL). */
    httpUrl?: string;
    /** A fetch for the HTTP transports (default: the global one). */
    fetch?: typeof fetch;
    /** On a fallback, WebSocket is tried again after 2 s, then after this (doubling, up to 10 min); 0: never. Default 30000. */
    upgradeProbeMs?: number;
    /** HTTP transports: no message from the gateway within this is a failed attempt (default 10000). */
    connectTimeoutMs?: number;
    /** Long-polling: polls failing this long end the connection (default 10000). */
    pollGiveUpMs?: number;
    /** Reconnect after a lost connection (default true). */
    reconnect?: boolean;
    /** Backoff: full jitter in [0, min(max, min * 2^attempt)) (defaults 250, 15000). */
    minReconnectDelayMs?: number;
    maxReconnectDelayMs?: number;
    /** Requests of the app waiting to be sent or answered (default 1000). */
    maxPending?: number;
    /** Ephemeral messages waiting for an async handler (default 10000). */
    maxBuffered?: number;
    /** Acks are coalesced for this long (default 20). */
    ackDelayMs?: number;
    /** geo.set pacing (the server's --geo-rate / --geo-burst; defaults 10, 20). */
    geoRate?: number;
    geoBurst?: number;
    /** Random source of the backoff jitter (default Math.random). */
    random?: () => number;
}

export interface MessageInfo {
    channel: string;
    /** Durable channels only. */
    seq?: number;
    msgId?: string;
    /** When the server accepted it, ms since the Unix epoch. */
    ts?: number;
    /** data is a Uint8Array (the message was binary). */
    binary?: boolean;
}

export type MessageHandler = (data: any, info: MessageInfo) => void | Promise<void>;

export interface GapEvent {
    channel: string;
    from: number;
    to: number;
}

export interface ResetEvent {
    channel: string;
    /** 'not_recovered' (history lost or epoch changed) or 'bad_position' */
    reason: string;
    epoch: string | null;
}

export interface SubscribeOptions {
    /** Resume from a position kept by the app (Subscription.position). */
    since?: number;
    epoch?: string;
    /** Deliver what the channel retains first, then live. */
    history?: boolean;
    /** After recovered:false, deliver what the channel's new incarnation retains. */
    replayOnReset?: boolean;
    onGap?: (gap: GapEvent) => void;
    onReset?: (reset: ResetEvent) => void;
}

export class Subscription {
    readonly channel: string;
    readonly durable: boolean | null;
    /** The last seq handled and the epoch: pass them to subscribe() to resume later. */
    readonly position: { since: number | null; epoch: string | null };
    unsubscribe(): Promise<{ ok: true }>;
}

export interface PublishOptions {
    /** The idempotency key (generated when absent). */
    msgId?: string;
}

export interface PublishResult {
    msgId: string;
    /** Durable channels only. */
    seq?: number;
    /** The server had this msg_id already: nothing new was published. */
    dup: boolean;
}

export interface Position {
    lat: number;
    lon: number;
}

export interface Member extends Position {
    client: string;
    user: string;
    dist_m?: number;
    meta?: any;
}

export interface NearResult {
    members: Member[];
    partial?: boolean;
}

export interface Area extends Position {
    radius_m: number;
    limit?: number;
}

export type GeoEvent = 'join' | 'move' | 'leave';

export class Watch {
    readonly space: string;
    /** client id -> member, as the handler was told */
    readonly members: Map<string, Member>;
    readonly area: Area;
    /** Moves or resizes the circle; differences go to the handler. */
    update(area: Partial<Area>): Promise<Watch>;
    unwatch(): Promise<{ ok: true }>;
}

export interface ClientEvents {
    state: StateEvent;
    connecting: StateEvent;
    connected: StateEvent;
    disconnected: StateEvent;
    closed: StateEvent;
    /** A connection that was up ended. */
    lost: { code: number; reason: string };
    /** The server's `disconnect` message (code, reason, reconnect, after_ms). */
    'server-disconnect': { code: number; reason: string; reconnect: boolean; after_ms: number };
    gap: GapEvent;
    reset: ResetEvent;
    refreshed: { expiresInMs: number };
    /** A connection came up over another transport than the last one. */
    transport: { transport: 'websocket' | 'sse' | 'longpoll' | string; previous: string | null };
    error: RtgateError;
    'handler-error': MessageInfo & { error: unknown };
}

export class Client {
    constructor(url: string, options?: ClientOptions);
    readonly state: State;
    /** The current session's `connected` reply, or null. */
    readonly session: SessionInfo | null;
    /** The transport in use ('websocket', 'sse', 'longpoll'), or null. */
    readonly transport: string | null;
    /** Deliveries waiting for their handler. */
    readonly buffered: number;
    stats: {
        connects: number;
        duplicates: number;
        dropped: number;
        gaps: number;
        resets: number;
        retries: number;
        rateLimited: number;
    };

    /** Resolves once connected (the first request of an idle client also connects it). */
    connect(): Promise<SessionInfo>;
    /** Ends the session for good; pending requests reject with 'closed'. */
    close(): void;

    on<K extends keyof ClientEvents>(type: K, fn: (detail: ClientEvents[K]) => void): () => void;
    off<K extends keyof ClientEvents>(type: K, fn: (detail: ClientEvents[K]) => void): void;
    once<K extends keyof ClientEvents>(type: K): Promise<ClientEvents[K]>;

    subscribe(channel: string, handler: MessageHandler, options?: SubscribeOptions): Promise<Subscription>;
    unsubscribe(channel: string): Promise<{ ok: true }>;
    publish(channel: string, data: unknown, options?: PublishOptions): Promise<PublishResult>;

    geoSet(space: string, position: Position & { meta?: unknown }): Promise<{ cell?: string }>;
    geoClear(space: string): Promise<{ ok?: true }>;
    near(space: string, area: Area): Promise<NearResult>;
    watch(space: string, area: Area, handler?: (event: GeoEvent, member: Member) => void): Promise<Watch>;
}

/** Splits a JSON text frame into messages (one per line or back to back); null if it is not one. */
export function decodeJsonFrame(text: string): Record<string, unknown>[] | null;

export default Client;
