// Clients for tests/stack/test_recovery.py: the official socket.io-client as an app using
// connection-state recovery would. A connect with `socket.recovered` true is back in its
// rooms and gets what it missed from the server, so it does not re-join (re-joining would
// hide rooms that did not come back). Any other connect re-joins each room with `since`
// (the last stream_id it has there) and merges the ack's history, and the REST pages
// after it when `more`, skipping ids it has.
//   node recovery_clients.js '<json options>'
// Options: url, tokens[] (one client each), rooms, roomsPerClient (client i is in rooms
// i .. i+roomsPerClient-1, modulo rooms), senders (the first n clients send to their first
// room), every (ms between two messages of a sender). Senders start once every client has
// joined.
// stdin, a command a line:
//   phase <name>         what follows (sends, disconnects, receipts) is counted under <name>
//   cut <ms> <i> ...     destroy those clients' TCP connections (the server sees a transport
//                        close) and keep them offline <ms> ms (-1: until "release")
//   release              the held clients reconnect
//   stop                 senders stop, every ack is awaited, one marker per sender is sent
//                        and awaited, and one {"result": {...}} line follows
// stdout: {"progress": {...}} every 200 ms.
const { performance } = require("perf_hooks");
const { io } = require("socket.io-client");

const opts = JSON.parse(process.argv[2]);
const now = () => performance.now();
const clients = [];
const refusals = {}; // connect_error and join error codes
const count = (code) => { refusals[code] = (refusals[code] || 0) + 1; };
let phase = "warmup";
let stopping = false;
let sending = false;
const phases = new Map(); // name -> counters
const counters = (name) => {
  if (!phases.has(name)) {
    phases.set(name, { acked: 0, failed: 0, checked: 0, missing: 0, reconnects: 0,
                       recovered: 0, resynced: 0, notBack: 0, slowestBackMs: 0,
                       duplicates: 0, inversions: 0, incomplete: 0 });
  }
  return phases.get(name);
};

// "<ms>-<n>" (or "<n>"): a is later than b
const LOG_ID = /^\d+(-\d+)?$/;
const later = (a, b) => {
  const [am, an = 0] = a.split("-").map(Number);
  const [bm, bn = 0] = b.split("-").map(Number);
  return am > bm || (am === bm && an > bn);
};

function makeClient(i, token) {
  const rooms = [];
  for (let k = 0; k < opts.roomsPerClient; k++) rooms.push(`rec-${(i + k) % opts.rooms}`);
  const c = {
    i, token, rooms, room: rooms[0], sends: i < opts.senders, seq: 0,
    outstanding: 0, acks: [],      // {seq, phase, ok, code}
    seen: new Map(rooms.map((r) => [r, new Map()])), // room -> stream_id -> entry
    last: new Map(),               // room -> the latest stream_id it has
    liveSeq: new Map(),            // "room:sender" -> last seq received live
    markers: new Set(),            // "room:sender"
    live: 0, withOffset: 0, overlaps: 0, ownEchoes: 0, belowLast: 0,
    offset: null, offsetInversions: 0,
    gen: 0, connects: 0, inRooms: false, joined: false, held: false,
    reconnects: [],                // {phase, at, reason, recovered, backMs}
  };
  c.socket = io(opts.url + "/chat", {
    transports: ["websocket"], reconnectionDelay: 100, reconnectionDelayMax: 1000,
    // a function: called for every attempt, as an app fetching a fresh token would
    // (the client adds {pid, offset} to it when it tries to recover)
    auth: (cb) => cb({ token }),
  });
  // a cut's delay holds for its first attempt only
  c.socket.io.on("reconnect_attempt", () => restoreDelays(c));
  c.socket.on("connect", () => {
    c.gen++;
    c.connects++;
    const last = c.reconnects[c.reconnects.length - 1];
    if (c.connects > 1 && last) {
      last.recovered = c.socket.recovered;
      if (c.socket.recovered === true) {
        back(c);
        return;
      }
    }
    joinAll(c);
  });
  c.socket.on("connect_error", (err) => count(`connect:${(err.data && err.data.code) || err.message}`));
  c.socket.on("disconnect", (reason) => {
    c.inRooms = false;
    c.reconnects.push({ phase, at: now(), reason, recovered: null, backMs: null });
  });
  c.socket.on("message", (m, offset) => {
    c.live++;
    if (offsetOf(c, offset)) c.withOffset++;
    record(c, m, "live");
  });
  c.socket.on("presence", (p, offset) => offsetOf(c, offset));
  return c;
}

// a room event's trailing offset argument, if any
function offsetOf(c, offset) {
  if (typeof offset !== "string") return false;
  // the client resumes after the last offset it received: one below it that arrives
  // later would be skipped by a recovery in between (offsets compared as log ids,
  // "<ms>-<n>" or a number)
  if (c.offset && LOG_ID.test(offset) && LOG_ID.test(c.offset) && !later(offset, c.offset)) {
    c.offsetInversions++;
  }
  c.offset = offset;
  return true;
}

function record(c, m, via) {
  const seen = c.seen.get(m.room);
  if (!seen) return;
  const [senderText, seqText] = m.text.split(":");
  const sender = Number(senderText);
  if (seen.has(m.stream_id)) {
    // live twice is a duplicate; history and live overlap around a re-join (expected)
    if (via === "live" && seen.get(m.stream_id).via === "live") counters(phase).duplicates++;
    else c.overlaps++;
    return;
  }
  seen.set(m.stream_id, { sender, seq: Number(seqText), marker: seqText === "end", via, phase });
  if (!c.last.has(m.room) || later(m.stream_id, c.last.get(m.room))) {
    c.last.set(m.room, m.stream_id);
  } else if (via === "live") {
    // after a later id of its room (another sender's, published first): a client that
    // dropped in between and re-joined `since` that later id would miss this one
    c.belowLast++;
  }
  if (seqText === "end") { c.markers.add(`${m.room}:${sender}`); return; }
  if (via !== "live") return;
  if (sender === c.i) c.ownEchoes++; // the sender's own socket is skipped
  const key = `${m.room}:${sender}`;
  if ((c.liveSeq.get(key) || 0) > Number(seqText)) counters(phase).inversions++;
  c.liveSeq.set(key, Number(seqText));
}

function restoreDelays(c) {
  c.socket.io.reconnectionDelay(100);
  c.socket.io.reconnectionDelayMax(1000);
  c.socket.io.randomizationFactor(0.5);
}

function back(c) {
  c.inRooms = c.joined = true;
  const last = c.reconnects[c.reconnects.length - 1];
  if (c.connects > 1 && last && last.backMs === null) last.backMs = now() - last.at;
  if (!sending && clients.every((other) => other.joined)) sending = true;
}

function joinAll(c) {
  const gen = c.gen;
  const pending = new Set(c.rooms);
  // what it had before this connection: a failed join is retried `since` the same id
  // (live messages may flow before the join is acked)
  for (const room of c.rooms) join(c, room, gen, pending, c.last.get(room));
}

function join(c, room, gen, pending, since) {
  c.socket.timeout(10000).emit("join", since ? { room, since } : { room }, async (err, ack) => {
    if (gen !== c.gen) return; // a later connection re-joins for itself
    if (err || !ack.ok) {
      count(`join:${err ? err.message : ack.error.code}`);
      // e.g. Redis down: try again while this connection lasts
      setTimeout(() => gen === c.gen && c.socket.connected && join(c, room, gen, pending, since), 300);
      return;
    }
    try {
      // the pages follow the last message of the one before (not the latest id this
      // client has: live messages arrive meanwhile)
      let page = merge(c, room, ack.history || [], ack);
      while (page.more && page.after) page = merge(c, room, ...(await nextPage(c, room, page.after)));
    } catch (error) {
      count(`history:${error.message}`);
      setTimeout(() => gen === c.gen && c.socket.connected && join(c, room, gen, pending, since), 300);
      return;
    }
    if (gen !== c.gen) return;
    pending.delete(room);
    if (pending.size === 0) back(c);
  });
}

// -> {more, after}: whether more follow, after which id
function merge(c, room, messages, { complete, more }) {
  for (const m of messages) record(c, m, "history");
  if (complete === false) counters(phase).incomplete++;
  return { more, after: messages.length ? messages[messages.length - 1].stream_id : null };
}

async function nextPage(c, room, after) {
  const response = await fetch(`${opts.url}/api/rooms/${room}/messages?after=${after}&limit=500`,
                               { headers: { Authorization: `Bearer ${c.token}` } });
  if (!response.ok) throw new Error(`rest ${response.status}`);
  const page = await response.json();
  return [page.messages, page];
}

function cut(c, ms) {
  const manager = c.socket.io;
  const ws = c.socket.connected && manager.engine.transport.ws;
  if (!ws) { count("cut:not connected"); return; }
  if (ms < 0) {
    c.held = true;
    manager.reconnection(false);
  } else {
    manager.reconnectionDelay(ms);
    manager.reconnectionDelayMax(ms);
    manager.randomizationFactor(0);
  }
  // ws's terminate(): the TCP connection destroyed without a close frame, as a network
  // cut; the manager then reconnects after its (here: the cut's) delay
  ws.terminate();
}

function release() {
  for (const c of clients.filter((c) => c.held)) {
    c.held = false;
    c.socket.io.reconnection(true);
    c.socket.connect();
  }
}

function send(c, text, clientId, onAck) {
  c.outstanding++;
  c.socket.timeout(10000).emit("message", { room: c.room, text, client_id: clientId }, (err, ack) => {
    c.outstanding--;
    onAck({ ok: !err && ack && ack.ok,
            code: err ? err.message : ack && !ack.ok ? ack.error.code : null });
  });
}

function tick() {
  if (stopping || !sending) return;
  for (const c of clients) {
    if (!c.sends || !c.inRooms) continue;
    const seq = ++c.seq;
    const sentIn = phase;
    send(c, `${c.i}:${seq}`, `r${c.i}-${seq}`, (a) => c.acks.push({ seq, phase: sentIn, ...a }));
  }
}

const waitFor = async (condition, ms) => {
  const deadline = now() + ms;
  while (!condition() && now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return condition();
};

function progress() {
  let ok = 0, failed = 0, live = 0, inRooms = 0, disconnects = 0, offline = 0;
  for (const c of clients) {
    for (const a of c.acks) a.ok ? ok++ : failed++;
    live += c.live;
    if (c.inRooms) inRooms++;
    if (!c.socket.connected) offline++;
    disconnects += c.reconnects.length;
  }
  return { phase, sending, ok, failed, live, inRooms, offline, disconnects,
           clients: clients.length, refusals };
}

function analyse(markerAcks) {
  const codes = {};
  let ownEchoes = 0, overlaps = 0, live = 0, withOffset = 0, belowLast = 0, offsetInversions = 0;
  const missingSamples = [];
  for (const c of clients) {
    for (const a of c.acks) {
      const p = counters(a.phase);
      if (a.ok) p.acked++;
      else { p.failed++; codes[a.code] = (codes[a.code] || 0) + 1; }
    }
    ownEchoes += c.ownEchoes; overlaps += c.overlaps; live += c.live; withOffset += c.withOffset;
    belowLast += c.belowLast; offsetInversions += c.offsetInversions;
    c.reconnects.forEach((d, n) => {
      const p = counters(d.phase);
      p.reconnects++;
      if (d.recovered === true) p.recovered++;
      else if (d.recovered !== null) p.resynced++;
      // a connection that dropped again before it was back counts under the later drop
      if (d.backMs === null && n === c.reconnects.length - 1) p.notBack++;
      if (d.backMs !== null) p.slowestBackMs = Math.max(p.slowestBackMs, Math.round(d.backMs));
    });
  }
  for (const c of clients) {
    for (const room of c.rooms) {
      const seen = c.seen.get(room);
      // what it has, merged in the room's order: each sender's messages in its order
      const lastSeq = new Map();
      for (const id of [...seen.keys()].sort((a, b) => (later(a, b) ? 1 : -1))) {
        const e = seen.get(id);
        if (e.marker) continue;
        if ((lastSeq.get(e.sender) || 0) >= e.seq) counters(e.phase).inversions++;
        lastSeq.set(e.sender, e.seq);
      }
      const got = new Set([...seen.values()].map((e) => `${e.sender}:${e.marker ? "end" : e.seq}`));
      for (const s of clients) {
        if (!s.sends || s.room !== room || s.i === c.i) continue;
        for (const a of s.acks.filter((a) => a.ok)) {
          const p = counters(a.phase);
          p.checked++;
          if (!got.has(`${s.i}:${a.seq}`)) {
            p.missing++;
            if (missingSamples.length < 10) {
              missingSamples.push({ to: c.i, room, from: s.i, seq: a.seq, phase: a.phase,
                                    reconnects: c.reconnects });
            }
          }
        }
        if (markerAcks.get(s.i) && !got.has(`${s.i}:end`)) {
          counters("end").missing++;
          if (missingSamples.length < 10) missingSamples.push({ to: c.i, room, from: s.i, seq: "end" });
        }
      }
    }
  }
  return { ...progress(), phases: Object.fromEntries(phases), codes, ownEchoes, overlaps,
           live, withOffset, offsetInversions, belowLast, missingSamples,
           markersFailed: [...markerAcks.values()].filter((ok) => !ok).length };
}

async function stop() {
  stopping = true;
  phase = "end";
  await waitFor(() => clients.every((c) => c.outstanding === 0), 20000);
  await waitFor(() => clients.every((c) => c.inRooms), 20000);
  const markerAcks = new Map();
  for (const c of clients.filter((c) => c.sends)) {
    send(c, `${c.i}:end`, `r${c.i}-end`, (a) => markerAcks.set(c.i, a.ok));
  }
  await waitFor(() => clients.every((c) => c.outstanding === 0), 20000);
  // every member has every marker acked ok: nothing more is coming
  await waitFor(() => clients.every((c) => clients.every((s) => !s.sends || s.i === c.i ||
    !c.rooms.includes(s.room) || !markerAcks.get(s.i) || c.markers.has(`${s.room}:${s.i}`))),
  20000);
  console.log(JSON.stringify({ result: analyse(markerAcks) }));
  for (const c of clients) c.socket.close();
  process.exit(0);
}

function command(line) {
  const [name, ...args] = line.trim().split(/\s+/);
  if (name === "phase") phase = args[0];
  else if (name === "cut") args.slice(1).forEach((i) => cut(clients[Number(i)], Number(args[0])));
  else if (name === "release") release();
  else if (name === "stop") stop();
}

opts.tokens.forEach((token, i) => clients.push(makeClient(i, token)));
setInterval(tick, opts.every);
setInterval(() => console.log(JSON.stringify({ progress: progress() })), 200);
let input = "";
process.stdin.on("data", (data) => {
  input += data.toString();
  const lines = input.split("\n");
  input = lines.pop();
  lines.filter((line) => line.trim()).forEach(command);
});
