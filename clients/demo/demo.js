/*
 * demo.js: the demo page served by `rtgate --static clients` (scripts/run.sh).
 * A chat room on a durable channel and a "nearby" view: a canvas drawing the
 * members of a presence space around you, live from a geo.watch, with movers
 * simulated from this page (each one its own connection). Everything goes
 * through the client library, which carries the page across a gateway
 * restart: it reconnects, resumes the room, restores the presence and the
 * watch, and sends the messages typed meanwhile.
 */
import { Client } from '../js/rtgate.js';

const params = new URLSearchParams(location.search);
const clean = (s, fallback) => (s || '').replace(/[^A-Za-z0-9_-]/g, '').slice(0, 32) || fallback;
const room = clean(params.get('room'), 'lobby');
const myName = (params.get('name') || 'guest-' + Math.floor(1000 + Math.random() * 9000)).slice(0, 40);
const channel = 'chat.' + room;
const space = 'nearby-' + room;
const RADIUS_M = 1000;
const me = {
    lat: Number(params.get('lat')) || 52.52 + (Math.random() - 0.5) * 0.004,
    lon: Number(params.get('lon')) || 13.405 + (Math.random() - 0.5) * 0.006,
};
const wsUrl = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';

const $ = (id) => document.getElementById(id);
const client = new Client(wsUrl, { name: myName });

/* ---- connection state ---- */

let retryTimer = null;
function showState(ev) {
    const badge = $('conn');
    badge.dataset.state = ev.state;
    clearInterval(retryTimer);
    let text = ev.state;
    if (ev.state === 'connected') {
        text = `connected to ${ev.node} over ${ev.transport}`;
        badge.dataset.transport = ev.transport; /* websocket, or a fallback: sse, longpoll */
        $('whoami').textContent = `you are ${myName} (${ev.client})`;
    } else if (ev.state === 'connecting') {
        text = ev.attempt ? `connecting (attempt ${ev.attempt + 1})` : 'connecting';
    } else if (ev.state === 'disconnected' && ev.willReconnect) {
        const at = Date.now() + ev.delayMs;
        const tick = () => {
            const s = Math.max(0, (at - Date.now()) / 1000).toFixed(1);
            $('conn-text').textContent = `disconnected (${ev.reason || 'code ' + ev.code}), retrying in ${s} s`;
        };
        tick();
        retryTimer = setInterval(tick, 100);
        return;
    } else if (ev.state === 'disconnected') {
        text = `disconnected: ${ev.reason || ev.code}`;
    }
    $('conn-text').textContent = text;
}
client.on('state', showState);

/* ---- chat ---- */

const byMsgId = new Map(); /* msg_id -> <li> */

function addMessage({ name, text, msgId, seq, pending, system }) {
    const li = document.createElement('li');
    if (system) {
        li.className = 'system';
        li.textContent = text;
    } else {
        const who = document.createElement('span');
        who.className = 'who';
        who.textContent = name;
        const body = document.createElement('span');
        body.className = 'text';
        body.textContent = text;
        const meta = document.createElement('span');
        meta.className = 'meta';
        li.append(meta, who, body);
        if (name === myName) li.classList.add('mine');
        if (msgId) byMsgId.set(msgId, li);
        setMeta(li, seq, pending);
    }
    const list = $('messages');
    list.append(li);
    while (list.children.length > 200) {
        byMsgId.forEach((v, k) => v === list.firstElementChild && byMsgId.delete(k));
        list.firstElementChild.remove();
    }
    list.scrollTop = list.scrollHeight;
    return li;
}

function setMeta(li, seq, pending) {
    li.classList.toggle('pending', !!pending);
    li.querySelector('.meta').textContent = pending ? 'sending...' : seq ? '#' + seq : '';
}

function onChat(data, info) {
    if (!data || typeof data.text !== 'string') return;
    const mine = info.msgId && byMsgId.get(info.msgId);
    if (mine) setMeta(mine, info.seq, false);
    else addMessage({ name: String(data.name || '?'), text: data.text, msgId: info.msgId, seq: info.seq });
}

function onReset() {
    /* The gateway lost the room's history (a memory-engine restart): keep
     * what is still being sent, reload the rest from what it holds now. */
    for (const li of [...$('messages').children]) if (!li.classList.contains('pending')) li.remove();
    for (const [id, li] of byMsgId) if (!li.isConnected) byMsgId.delete(id);
    const n = $('notice');
    n.hidden = false;
    n.textContent = 'The gateway lost this room\'s history (it restarted): showing what it holds now.';
}

$('send-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const input = $('text');
    const text = input.value.trim();
    if (!text) return;
    input.value = '';
    const msgId = crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2);
    const li = addMessage({ name: myName, text, msgId, pending: true });
    client.publish(channel, { name: myName, text }, { msgId }).then(
        (r) => setMeta(li, r.seq, false),
        (err) => {
            li.querySelector('.meta').textContent = 'not sent: ' + err.message;
        },
    );
});

/* ---- nearby ---- */

const canvas = $('map');
const ctx = canvas.getContext('2d');
let watch = null;
let drawQueued = false;

function metersFromMe(p) {
    const dy = (p.lat - me.lat) * 110540;
    const dx = (p.lon - me.lon) * 111320 * Math.cos((me.lat * Math.PI) / 180);
    return { dx, dy, d: Math.hypot(dx, dy) };
}

function scheduleDraw() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(draw);
}

function draw() {
    drawQueued = false;
    const w = canvas.width, h = canvas.height, r = Math.min(w, h) / 2 - 12;
    const scale = r / RADIUS_M;
    ctx.clearRect(0, 0, w, h);
    ctx.strokeStyle = '#c5d3bd';
    ctx.fillStyle = '#7b8b72';
    ctx.font = '11px sans-serif';
    for (const m of [250, 500, 1000]) {
        ctx.beginPath();
        ctx.arc(w / 2, h / 2, m * scale, 0, Math.PI * 2);
        ctx.stroke();
        ctx.fillText(m + ' m', w / 2 + 4, h / 2 - m * scale + 12);
    }
    const mine = client.session?.client;
    const others = [];
    for (const m of watch ? watch.members.values() : []) {
        if (m.client === mine) continue;
        const p = metersFromMe(m);
        others.push({ m, ...p });
        const x = w / 2 + p.dx * scale, y = h / 2 - p.dy * scale;
        ctx.beginPath();
        ctx.fillStyle = m.meta?.mover ? '#ff8f00' : '#d81b60';
        ctx.arc(x, y, 6, 0, Math.PI * 2);
        ctx.fill();
        ctx.fillStyle = '#1d2430';
        ctx.font = '12px sans-serif';
        ctx.fillText(String(m.meta?.name || m.user), x + 9, y + 4);
    }
    ctx.beginPath();
    ctx.fillStyle = '#2962ff';
    ctx.arc(w / 2, h / 2, 8, 0, Math.PI * 2);
    ctx.fill();
    ctx.fillStyle = '#1d2430';
    ctx.font = 'bold 12px sans-serif';
    ctx.fillText('you', w / 2 + 10, h / 2 + 4);
    renderList(others.sort((a, b) => a.d - b.d));
}

function renderList(others) {
    const ul = $('members');
    ul.replaceChildren(
        ...others.map(({ m, d }) => {
            const li = document.createElement('li');
            const n = document.createElement('span');
            n.className = 'name';
            n.textContent = String(m.meta?.name || m.user);
            const dist = document.createElement('span');
            dist.className = 'muted';
            dist.textContent = Math.round(d) + ' m';
            li.append(n, dist);
            return li;
        }),
    );
    if (!others.length) {
        const li = document.createElement('li');
        li.className = 'muted';
        li.textContent = 'nobody within 1 km yet: simulate movers or open this page in another tab';
        ul.append(li);
    }
}

canvas.addEventListener('click', (e) => {
    const rect = canvas.getBoundingClientRect();
    const r = Math.min(canvas.width, canvas.height) / 2 - 12;
    const scale = r / RADIUS_M;
    const dx = ((e.clientX - rect.left) * (canvas.width / rect.width) - canvas.width / 2) / scale;
    const dy = -((e.clientY - rect.top) * (canvas.height / rect.height) - canvas.height / 2) / scale;
    me.lat += dy / 110540;
    me.lon += dx / (111320 * Math.cos((me.lat * Math.PI) / 180));
    client.geoSet(space, { lat: me.lat, lon: me.lon, meta: { name: myName } }).catch(() => {});
    watch?.update({ lat: me.lat, lon: me.lon });
    scheduleDraw();
});

/* ---- simulated movers: each one its own connection ---- */

const movers = [];

function startMovers(n) {
    for (let i = 0; i < n; i++) {
        const c = new Client(wsUrl, { name: 'mover' });
        const id = movers.length + 1;
        const pos = { lat: me.lat + (Math.random() - 0.5) * 0.01, lon: me.lon + (Math.random() - 0.5) * 0.014 };
        let heading = Math.random() * Math.PI * 2;
        const meta = { name: `${myName}'s mover ${id}`, mover: true };
        c.connect().catch(() => {});
        c.geoSet(space, { ...pos, meta }).catch(() => {});
        const timer = setInterval(() => {
            heading += (Math.random() - 0.5) * 0.8;
            const step = 25 + Math.random() * 30; /* metres a second: a cyclist */
            pos.lat += (Math.sin(heading) * step) / 110540;
            pos.lon += (Math.cos(heading) * step) / (111320 * Math.cos((pos.lat * Math.PI) / 180));
            const d = metersFromMe(pos).d;
            if (d > RADIUS_M * 0.9) heading += Math.PI; /* turn back towards you */
            c.geoSet(space, { ...pos, meta }).catch(() => {});
        }, 1000);
        movers.push({ c, timer });
    }
    $('stop-movers').disabled = false;
}

function stopMovers() {
    for (const { c, timer } of movers.splice(0)) {
        clearInterval(timer);
        c.close();
    }
    $('stop-movers').disabled = true;
}

$('add-movers').addEventListener('click', () => startMovers(3));
$('stop-movers').addEventListener('click', stopMovers);

/* ---- start ---- */

$('room-name').textContent = room;
$('radius-label').textContent = `within ${RADIUS_M} m`;
renderList([]);
client.connect().catch((err) => addMessage({ system: true, text: 'cannot connect: ' + err.message }));
client.subscribe(channel, onChat, { history: true, replayOnReset: true, onReset }).catch((err) =>
    addMessage({ system: true, text: 'cannot join the room: ' + err.message }),
);
client.geoSet(space, { lat: me.lat, lon: me.lon, meta: { name: myName } }).catch(() => {});
client
    .watch(space, { lat: me.lat, lon: me.lon, radius_m: RADIUS_M }, scheduleDraw)
    .then((w) => {
        watch = w;
        scheduleDraw();
    })
    .catch((err) => addMessage({ system: true, text: 'cannot watch nearby: ' + err.message }));

/* For the end-to-end tests and the curious (devtools). */
window.rtgateDemo = { client, room, channel, space, me, startMovers, stopMovers };
