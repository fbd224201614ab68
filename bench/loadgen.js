// Load generator: the official socket.io-client, the same for every server.
// node loadgen.js '<json options>'  -> prints one JSON result line.
// Options: urls[], scenario (fanout|rate|idle|storm), clients, rooms, senders, messages,
// rate (deliveries/s), seconds, token, joinEvent, sendEvent, recvEvent, extra (payload
// fields), concurrency, timeout, procs (fanout: client processes, so that the load
// generator is not the bottleneck; each holds every procs-th client).
const { fork } = require("child_process");
const { monitorEventLoopDelay, performance } = require("perf_hooks");
const { io } = require("socket.io-client");

const opts = JSON.parse(process.argv[2]);
// ms; one clock for every process of a run (latencies cross processes)
const now = () => performance.timeOrigin + performance.now();
const procs = opts.procs || 1;
const part = opts.part || 0; // which clients this process holds: index % procs == part
const mine = (i) => i % procs === part;
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

// sockets[i] is client i (global numbering: i % rooms is its room, i < senders sends);
// with several processes, the other processes' clients are holes.
async function connectAll(n) {
  const sockets = new Array(n);
  const concurrency = opts.concurrency || 200;
  for (let start = 0; start < n; start += concurrency) {
    const batch = [];
    for (let i = start; i < Math.min(n, start + concurrency); i++) {
      if (mine(i)) batch.push(connectOne(i).then((s) => { sockets[i] = s; }));
    }
    await Promise.all(batch);
  }
  return sockets;
}

async function joinRooms(sockets) {
  const joins = [];
  sockets.forEach((s, i) => joins.push(new Promise((resolve) => {
    s.emit(opts.joinEvent || "join", { room: `r${i % opts.rooms}` }, resolve);
  })));
  await Promise.all(joins);
}

function percentile(sorted, p) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function listen(sockets, onDelivery) {
  sockets.forEach((s) => s.on(opts.recvEvent, (m) => {
    const [sender, seq, sent] = m.text.split(":");
    onDelivery(s, `${sender}:${seq}`, now() - Number(sent), Number(seq));
  }));
}

function send(sockets, senderIndex, seq) {
  const room = `r${senderIndex % opts.rooms}`;
  const text = `${senderIndex}:${seq}:${now()}`;
  sockets[senderIndex].emit(opts.sendEvent, { room, text, ...(opts.extra || {}) });
}

// Latency percentiles, and the share of one core this process (or each of `processes`
// processes, on average, whose CPU time is `cpuMs`) used since it started.
function summary(latencies, extra, cpuMs = null, processes = 1) {
  latencies.sort((a, b) => a - b);
  if (cpuMs === null) {
    const cpu = process.cpuUsage(cpuStart);
    cpuMs = (cpu.user + cpu.system) / 1000;
  }
  return {
    ...extra,
    p50_ms: percentile(latencies, 50), p99_ms: percentile(latencies, 99),
    max_ms: latencies.length ? latencies[latencies.length - 1] : null,
    loadgen_cpu_share: cpuMs / (now() - wallStart) / processes,
  };
}

// Deliveries this process should see: each of its clients gets every message sent to
// its room (the template's `echo` includes the sender's own).
function expectedDeliveries(sockets) {
  const perRoom = new Array(opts.rooms).fill(0);
  for (let i = 0; i < opts.senders; i++) perRoom[i % opts.rooms] += opts.messages;
  let expected = 0;
  sockets.forEach((s, i) => { expected += perRoom[i % opts.rooms]; });
  return expected;
}

async function fanout(sockets, go) {
  const expected = expectedDeliveries(sockets);
  const latencies = [];
  const seen = new Set();
  let duplicates = 0;
  let last = null;
  listen(sockets, (s, id, latency) => {
    const key = `${s.id}/${id}`;
    if (seen.has(key)) duplicates++; else seen.add(key);
    latencies.push(latency);
    last = now();
  });
  await go; // every process connected and joined
  const first = now();
  for (let m = 0; m < opts.messages; m++) {
    for (let i = 0; i < opts.senders; i++) if (sockets[i]) send(sockets, i, m);
    if (m % 10 === 9) await sleep(0); // let the event loop read while sending
  }
  const deadline = now() + (opts.timeout || 60) * 1000;
  while (seen.size < expected && now() < deadline) await sleep(20);
  await sleep(300); // late duplicates
  const cpu = process.cpuUsage(cpuStart);
  return { expected, received: seen.size, duplicates, first, last: last || now(), latencies,
    cpu_ms: (cpu.user + cpu.system) / 1000 };
}

function fanoutSummary(parts) {
  const sum = (key) => parts.reduce((total, p) => total + p[key], 0);
  const first = Math.min(...parts.map((p) => p.first));
  const last = Math.max(...parts.map((p) => p.last));
  const received = sum("received");
  return summary([].concat(...parts.map((p) => p.latencies)), {
    expected: sum("expected"), received, lost: sum("expected") - received,
    duplicates: sum("duplicates"), deliveries_per_s: received / ((last - first) / 1000),
    processes: parts.length,
  }, sum("cpu_ms"), parts.length);
}

// The parent of a multi-process fanout or steady rate: starts the parts, lets them
// send together once all have joined, and merges their results.
async function parent() {
  const children = [];
  for (let k = 0; k < procs; k++) {
    children.push(fork(__filename, [JSON.stringify({ ...opts, part: k })]));
  }
  const message = (child, key) => new Promise((resolve, reject) => {
    child.on("message", (m) => { if (key in m) resolve(m[key]); });
    child.on("exit", (code) => reject(new Error(`load generator part exited: ${code}`)));
  });
  const results = children.map((c) => message(c, "result"));
  await Promise.all(children.map((c) => message(c, "joined")));
  console.log(JSON.stringify({ joined: true })); // the orchestrator samples server CPU here
  if (opts.idleBefore) { // the servers' idle CPU, joined and quiet, sampled around this
    await sleep(opts.idleBefore * 1000);
    console.log(JSON.stringify({ idle_done: true }));
  }
  const startAt = now() + 50; // (the steady rate's common schedule)
  children.forEach((c) => c.send({ go: true, startAt }));
  const parts = await Promise.all(results);
  const merged = opts.scenario === "rate" ? rateSummary(parts) : fanoutSummary(parts);
  console.log(JSON.stringify(merged));
  process.exit(0);
}

// The steady rate: message n (sent by client n % senders) is due at start + n / rate,
// one schedule for every process of a run (each sends for its own senders); messages
// due in the warm-up are not measured. Listening from the call on (before `started`
// resolves: another process may send first).
async function steadyRate(sockets, started) {
  const members = opts.clients / opts.rooms;
  const messagesPerSecond = opts.rate / members;
  const tickMs = 10;
  const warmup = Math.floor((opts.warmup || 0) * messagesPerSecond);
  const total = warmup + Math.floor(opts.seconds * messagesPerSecond);
  // this process's clients, each getting every measured message of its room
  const perRoom = new Array(opts.rooms).fill(0);
  for (let n = warmup; n < total; n++) perRoom[(n % opts.senders) % opts.rooms]++;
  let expected = 0;
  sockets.forEach((s, i) => { expected += perRoom[i % opts.rooms]; });
  const latencies = [];
  let received = 0;
  let lastReceived = null;
  listen(sockets, (s, id, latency, seq) => {
    if (seq >= warmup && seq < total) { latencies.push(latency); received++; lastReceived = now(); }
  });
  const startAt = await started;
  // this process's own lag: a busy load generator delays every latency it measures
  const loop = monitorEventLoopDelay({ resolution: 1 });
  let cpu = null;
  let measuredFrom = null;
  let lateMs = 0; // how far behind its schedule this process sent (a stall)
  // the schedule follows the clock, not the ticks: a late tick sends what is due (with a
  // count of ticks, a server that slowed the load generator was sent less)
  let sent = 0;
  while (sent < total) {
    const elapsed = now() - startAt;
    const due = Math.min(total, Math.floor((elapsed / 1000) * messagesPerSecond) + 1);
    for (; sent < due; sent++) {
      if (sent === warmup) { loop.enable(); cpu = process.cpuUsage(); measuredFrom = now(); }
      lateMs = Math.max(lateMs, elapsed - (sent / messagesPerSecond) * 1000);
      const sender = sent % opts.senders;
      if (sockets[sender]) send(sockets, sender, sent);
    }
    await sleep(tickMs);
  }
  const sentAll = now();
  // until every measured delivery is in (what never comes is lost), bounded
  const deadline = sentAll + (opts.timeout || 30) * 1000;
  while (received < expected && now() < deadline) await sleep(20);
  loop.disable();
  const used = process.cpuUsage(cpu || undefined);
  const window = (now() - (measuredFrom || startAt)) / 1000;
  return { latencies, received, expected, sent: total - warmup, cpu_ms: (used.user + used.system) / 1000,
    window_s: window, measured_from: measuredFrom || startAt, last_received: lastReceived || sentAll,
    late_ms: lateMs, lag_p99_ms: loop.percentile(99) / 1e6, lag_max_ms: loop.max / 1e6 };
}

function rateSummary(parts) {
  const sum = (key) => parts.reduce((total, p) => total + p[key], 0);
  const received = sum("received"), expected = sum("expected");
  // from the first measured send to the last measured delivery, across processes
  const span = (Math.max(...parts.map((p) => p.last_received))
    - Math.min(...parts.map((p) => p.measured_from))) / 1000;
  return summary([].concat(...parts.map((p) => p.latencies)), {
    target_deliveries_per_s: opts.rate, achieved_deliveries_per_s: received / span,
    expected, received, lost: expected - received, processes: parts.length,
    loadgen_send_late_max_ms: Math.max(...parts.map((p) => p.late_ms)),
    // each process's CPU over its measured window, on average (of one core)
    loadgen_steady_cpu_share: parts.reduce((t, p) => t + p.cpu_ms / (p.window_s * 1000), 0)
      / parts.length,
    // the worst process's (a stall in any delays the latencies it measures)
    loadgen_lag_p99_ms: Math.max(...parts.map((p) => p.lag_p99_ms)),
    loadgen_lag_max_ms: Math.max(...parts.map((p) => p.lag_max_ms)),
    loadgen_lag_ms_per_process: parts.map((p) => [p.lag_p99_ms, p.lag_max_ms]),
  }, sum("cpu_ms"), parts.length);
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
  if ((opts.scenario === "fanout" || opts.scenario === "rate") && procs > 1
      && opts.part === undefined) {
    await parent();
    return;
  }
  const sockets = await connectAll(opts.clients);
  if (opts.scenario === "idle") {
    console.log(JSON.stringify({ ready: true, connections: opts.clients }));
    process.stdin.resume(); // held until the orchestrator closes stdin
    process.stdin.on("end", () => process.exit(0));
    return;
  }
  await joinRooms(sockets);
  if (process.send) { // a part of a multi-process fanout or steady rate
    const go = new Promise((resolve) => process.on("message", (m) => m.go && resolve(m)));
    // (listening before `joined`: another part may send as soon as it is told to go)
    const pending = opts.scenario === "rate" ? steadyRate(sockets, go.then((m) => m.startAt))
      : fanout(sockets, go);
    process.send({ joined: true });
    const result = await pending;
    sockets.forEach((s) => s.disconnect());
    process.send({ result }, () => process.exit(0)); // exit once the result is sent
    return;
  }
  console.log(JSON.stringify({ joined: true })); // the orchestrator samples server CPU here
  if (opts.idleBefore) { // the servers' idle CPU, joined and quiet, sampled around this
    await sleep(opts.idleBefore * 1000);
    console.log(JSON.stringify({ idle_done: true }));
  }
  const result = opts.scenario === "rate"
    ? rateSummary([await steadyRate(sockets, Promise.resolve().then(now))])
    : fanoutSummary([await fanout(sockets, Promise.resolve())]);
  console.log(JSON.stringify(result));
  sockets.forEach((s) => s.disconnect());
  process.exit(0);
}

main().catch((err) => { console.log(JSON.stringify({ error: String(err) })); process.exit(1); });
