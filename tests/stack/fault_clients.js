// Clients for tests/stack/test_faults.py: the official socket.io-client, as an app
// would use it (re-join on every connect, a token fetched for each attempt).
//   node fault_clients.js '<json options>'
// Options: url, tokens[] (one client each), rooms, senders (the first n clients
// send), burst (messages sent at once, no waiting for acks), every (ms between bursts).
// Each send has a client_id and is resent like the README's client: after no ack in
// time, queue_unavailable or delivery_incomplete, up to 3 times; its last answer counts.
// stdout: JSON lines {"progress": {...}} every 200 ms; on "stop" (stdin) the senders
// stop, every ack is awaited, one marker per sender is sent and awaited, and one
// {"result": {...}} line follows.
const { performance } = require("perf_hooks");
const { io } = require("socket.io-client");

const opts = JSON.parse(process.argv[2]);
const now = () => performance.now();
const clients = [];
let stopping = false;
const refusals = {}; // connect_error and join error codes (reported with the progress)
const count = (code) => { refusals[code] = (refusals[code] || 0) + 1; };

function makeClient(i, token) {
  const c = {
    i, room: `fault-${i % opts.rooms}`, sends: i < opts.senders, seq: 0,
    outstanding: 0, acks: [], resends: 0, // acks: {seq, sentAt, ok, code, ackAt}
    resent: new Set(),        // "sender:seq" of the sends resent: out of order by design
    received: [],             // [sender, seq] in arrival order
    ids: new Set(), duplicates: 0, markers: new Set(),
    joinedAt: null, firstJoinedAt: null, disconnects: [], outages: [],
  };
  c.socket = io(opts.url + "/chat", {
    transports: ["websocket"], reconnectionDelay: 100, reconnectionDelayMax: 1000,
    // a function: called for every attempt, as an app fetching a fresh token would
    auth: (cb) => cb({ token }),
  });
  c.socket.on("connect", () => {
    c.socket.emit("join", { room: c.room }, (ack) => {
      if (!ack || !ack.ok) { count(`join:${ack && ack.error.code}:${ack && ack.error.message}`); return; }
      c.joinedAt = now();
      if (c.firstJoinedAt === null) c.firstJoinedAt = c.joinedAt;
      const last = c.disconnects[c.disconnects.length - 1];
      if (last && last.back === undefined) last.back = c.joinedAt - last.at;
    });
  });
  c.socket.on("connect_error", (err) => count(`connect:${(err.data && err.data.code) || err.message}`));
  c.socket.on("disconnect", (reason) => {
    c.joinedAt = null;
    c.disconnects.push({ at: now(), reason });
  });
  c.socket.on("message", (m) => {
    if (c.ids.has(m.id)) { c.duplicates++; return; }
    c.ids.add(m.id);
    const [sender, seq] = m.text.split(":");
    if (seq === "end") c.markers.add(Number(sender));
    else c.received.push([Number(sender), Number(seq)]);
  });
  return c;
}

const RETRY = ["queue_unavailable", "delivery_incomplete"];

function send(c, text, onAck) {
  c.outstanding++;
  const sentAt = now();
  const clientId = `f${c.i}-${text.replace(":", "-")}`;
  const answers = [];
  const attempt = (n) => c.socket.timeout(10000).emit("message",
    { room: c.room, text, client_id: clientId }, (err, ack) => {
      const code = err ? "timeout" : ack && !ack.ok ? ack.error.code : null;
      answers.push(code);
      if ((err || RETRY.includes(code)) && n < 4 && !stopping) {
        c.resends++;
        c.resent.add(text);
        // once back in the room (a resend before the re-join would be not_in_room)
        const resend = () => (c.joinedAt ? attempt(n + 1) : setTimeout(resend, 50));
        return setTimeout(resend, 250 * n);
      }
      c.outstanding--;
      onAck({ sentAt, ackAt: now(), ok: !err && ack && ack.ok, code,
              id: ack && ack.ok ? ack.message.id : null,
              // every attempt said "nobody got it"
              refused: answers.every((a) => a === "queue_unavailable") });
    });
  attempt(1);
}

function burst(c) {
  if (stopping || !c.joinedAt) return;
  for (let n = 0; n < opts.burst; n++) {
    const seq = ++c.seq;
    send(c, `${c.i}:${seq}`, (a) => c.acks.push({ seq, ...a }));
  }
}

const waitFor = async (condition, ms) => {
  const deadline = now() + ms;
  while (!condition() && now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return condition();
};

function progress() {
  let ok = 0, failed = 0, delivered = 0, joined = 0, disconnects = 0;
  for (const c of clients) {
    disconnects += c.disconnects.length;
    for (const a of c.acks) a.ok ? ok++ : failed++;
    delivered += c.received.length;
    if (c.joinedAt) joined++;
  }
  return { ok, failed, delivered, joined, disconnects, clients: clients.length, refusals };
}

function analyse(markerAcks) {
  const okBySender = new Map(); // sender -> [{seq, sentAt}]
  const codes = {};
  const refused = new Set(); // "sender:seq" answered queue_unavailable at every attempt
  let resends = 0;
  for (const c of clients) {
    okBySender.set(c.i, c.acks.filter((a) => a.ok));
    resends += c.resends;
    for (const a of c.acks) {
      if (!a.ok) codes[a.code] = (codes[a.code] || 0) + 1;
      if (a.refused) refused.add(`${c.i}:${a.seq}`);
    }
  }
  // deliveries of a send answered queue_unavailable: "nobody got it" must hold
  let refusedReceived = 0;
  for (const c of clients) {
    for (const [s, q] of c.received) if (refused.has(`${s}:${q}`)) refusedReceived++;
  }
  let inversions = 0, duplicates = 0, lost = 0, expected = 0, stayed = 0, minOwed = null;
  const lostSamples = [];
  let slowestBack = 0, notBack = 0, disconnects = 0;
  for (const c of clients) {
    duplicates += c.duplicates;
    const last = new Map();
    for (const [sender, seq] of c.received) {
      if (clients[sender].resent.has(`${sender}:${seq}`)) continue;
      if ((last.get(sender) || 0) > seq) inversions++;
      last.set(sender, seq);
    }
    for (const d of c.disconnects) {
      disconnects++;
      if (d.back === undefined) notBack++;
      else slowestBack = Math.max(slowestBack, d.back);
    }
    if (c.disconnects.length || c.firstJoinedAt === null) continue;
    // a member that stayed connected: every message of its room acked ok after it
    // joined must have reached it
    stayed++;
    const owedBefore = expected;
    const got = new Set(c.received.map(([s, q]) => `${s}:${q}`));
    for (const s of clients) {
      if (s.i === c.i || s.room !== c.room || !s.sends) continue;
      for (const a of okBySender.get(s.i)) {
        if (a.sentAt < c.firstJoinedAt) continue;
        expected++;
        if (!got.has(`${s.i}:${a.seq}`)) {
          lost++;
          if (lostSamples.length < 10) lostSamples.push({ to: c.i, from: s.i, seq: a.seq, id: a.id });
        }
      }
      if (markerAcks.get(s.i) && !c.markers.has(s.i)) {
        lost++;
        if (lostSamples.length < 10) lostSamples.push({ to: c.i, from: s.i, seq: "end" });
      }
    }
    minOwed = minOwed === null ? expected - owedBefore : Math.min(minOwed, expected - owedBefore);
  }
  return { ...progress(), codes, resends, refused: refused.size, refusedReceived,
           inversions, duplicates, lost, expected, stayed, minOwed,
           lostSamples, disconnects, notBack, slowestBackMs: Math.round(slowestBack) };
}

async function stop() {
  stopping = true;
  await waitFor(() => clients.every((c) => c.outstanding === 0), 20000);
  await waitFor(() => clients.every((c) => c.joinedAt), 10000);
  const markerAcks = new Map();
  for (const c of clients.filter((c) => c.sends)) {
    send(c, `${c.i}:end`, (a) => markerAcks.set(c.i, a.ok));
  }
  await waitFor(() => clients.every((c) => c.outstanding === 0), 20000);
  // every member that stayed has every marker acked ok: nothing more is coming
  await waitFor(() => clients.every((c) => c.disconnects.length ||
    clients.every((s) => !s.sends || s.room !== c.room || s.i === c.i ||
                  !markerAcks.get(s.i) || c.markers.has(s.i))), 20000);
  console.log(JSON.stringify({ result: analyse(markerAcks) }));
  for (const c of clients) c.socket.close();
  process.exit(0);
}

opts.tokens.forEach((token, i) => clients.push(makeClient(i, token)));
setInterval(() => clients.filter((c) => c.sends).forEach(burst), opts.every);
setInterval(() => console.log(JSON.stringify({ progress: progress() })), 200);
process.stdin.on("data", (data) => { if (data.toString().includes("stop")) stop(); });
