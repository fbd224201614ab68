// Load generator: the official socket.io-client, the same for every server.
// node loadgen.js '<json options>'  -> prints one JSON result line.
// Options: urls[], scenario (fanout|rate|idle|storm), clients, rooms, senders, messages,
// rate (deliveries/s), seconds, token, joinEvent, sendEvent, recvEvent, extra (payload
// fields), concurrency, timeout.
const { io } = require("socket.io-client");

const opts = JSON.parse(process.argv[2]);
const now = () => Number(process.hrtime.bigint()) / 1e6; // ms, monotonic
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const cpuStart = process.cpuUsage();
const wallStart = now();

function connectOne(i) {
  const url = opts.urls[i % opts.urls.length];
  return new Promise((resolve, reject) => {
    const socket = io(url + (opts.namespace || ""), {
      transports: ["websocket"], reconnection: false, forceNew: true,
      auth: opts.token ? { token: opts.token } : undefined, timeout: 30000,
    });
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", (err) => reject(err));
  });
}

async function connectAll(n) {
  const sockets = new Array(n);
  const concurrency = opts.concurrency || 200;
  for (let start = 0; start < n; start += concurrency) {
    const batch = [];
    for (let i = start; i < Math.min(n, start + concurrency); i++) {
      batch.push(connectOne(i).then((s) => { sockets[i] = s; }));
    }
    await Promise.all(batch);
  }
  return sockets;
}

async function joinRooms(sockets) {
  await Promise.all(sockets.map((s, i) => new Promise((resolve) => {
    s.emit(opts.joinEvent || "join", { room: `r${i % opts.rooms}` }, resolve);
  })));
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function listen(sockets, onDelivery) {
  sockets.forEach((s) => s.on(opts.recvEvent, (m) => {
    const [sender, seq, sent] = m.text.split(":");
    onDelivery(s, `${sender}:${seq}`, now() - Number(sent));
  }));
}

function send(sockets, senderIndex, seq) {
  const room = `r${senderIndex % opts.rooms}`;
  const text = `${senderIndex}:${seq}:${now()}`;
  sockets[senderIndex].emit(opts.sendEvent, { room, text, ...(opts.extra || {}) });
}

function summary(latencies, extra) {
  latencies.sort((a, b) => a - b);
  const cpu = process.cpuUsage(cpuStart);
  const wall = now() - wallStart;
  return {
    ...extra,
    p50_ms: percentile(latencies, 50), p99_ms: percentile(latencies, 99),
    max_ms: latencies.length ? latencies[latencies.length - 1] : null,
    loadgen_cpu_share: (cpu.user + cpu.system) / 1000 / wall,
  };
}

async function fanout(sockets) {
  const members = sockets.length / opts.rooms;
  const expected = opts.senders * opts.messages * members;
  const latencies = [];
  const seen = new Set();
  let duplicates = 0;
  let first = null;
  let last = null;
  listen(sockets, (s, id, latency) => {
    const key = `${s.id}/${id}`;
    if (seen.has(key)) duplicates++; else seen.add(key);
    latencies.push(latency);
    last = now();
  });
  first = now();
  for (let m = 0; m < opts.messages; m++) {
    for (let i = 0; i < opts.senders; i++) send(sockets, i, m);
    if (m % 10 === 9) await sleep(0); // let the event loop read while sending
  }
  const deadline = now() + (opts.timeout || 60) * 1000;
  while (seen.size < expected && now() < deadline) await sleep(20);
  await sleep(300); // late duplicates
  return summary(latencies, {
    expected, received: seen.size, lost: expected - seen.size, duplicates,
    deliveries_per_s: seen.size / (((last || now()) - first) / 1000),
  });
}

async function steadyRate(sockets) {
  const members = sockets.length / opts.rooms;
  const messagesPerSecond = opts.rate / members;
  const tickMs = 10;
  const perTick = messagesPerSecond * tickMs / 1000;
  const latencies = [];
  let received = 0;
  listen(sockets, (s, id, latency) => { latencies.push(latency); received++; });
  let sent = 0;
  let credit = 0;
  const start = now();
  while (now() - start < opts.seconds * 1000) {
    credit += perTick;
    while (credit >= 1) { send(sockets, sent % opts.senders, sent); sent++; credit -= 1; }
    await sleep(tickMs);
  }
  await sleep(1000);
  const elapsed = (now() - start) / 1000;
  return summary(latencies, {
    target_deliveries_per_s: opts.rate, achieved_deliveries_per_s: received / elapsed,
    expected: sent * members, received, lost: sent * members - received,
  });
}

async function main() {
  if (opts.scenario === "storm") {
    const start = now();
    const sockets = await connectAll(opts.clients);
    const elapsed = (now() - start) / 1000;
    sockets.forEach((s) => s.disconnect());
    console.log(JSON.stringify(summary([], { connections: opts.clients,
      connections_per_s: opts.clients / elapsed })));
    process.exit(0);
  }
  const sockets = await connectAll(opts.clients);
  if (opts.scenario === "idle") {
    console.log(JSON.stringify({ ready: true, connections: sockets.length }));
    process.stdin.resume(); // held until the orchestrator closes stdin
    process.stdin.on("end", () => process.exit(0));
    return;
  }
  await joinRooms(sockets);
  console.log(JSON.stringify({ joined: true })); // the orchestrator samples server CPU here
  const result = opts.scenario === "rate" ? await steadyRate(sockets) : await fanout(sockets);
  console.log(JSON.stringify(result));
  sockets.forEach((s) => s.disconnect());
  process.exit(0);
}

main().catch((err) => { console.log(JSON.stringify({ error: String(err) })); process.exit(1); });
