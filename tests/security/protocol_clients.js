// The official socket.io-client, for tests/security/test_protocol.py:
//   node protocol_clients.js '<json options>'      (NODE_PATH: bench/node_modules)
// Options: url (with the namespace), token, transports, scenario:
//   "acks":    emit `count` events with an ack at once; one line {"acks": n} once all
//              n are back (or the connect fails: {"connect_error": ...})
//   "connect": connect and report, one JSON line each, every connect_error
//              {message, description, responseText, data, active}, every
//              {"reconnect_attempt": n}, and {"connected": true} (then exit, unless
//              `stay`: then go on reporting, {"disconnect": reason} too)
// keepAlive: polling requests reuse their connections, as a browser's do (Node's
// default client opens one per request).
const http = require("http");
const { io } = require("socket.io-client");

const opts = JSON.parse(process.argv[2]);
const print = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const socket = io(opts.url, {
  transports: opts.transports, auth: { token: opts.token },
  reconnectionDelay: 100, reconnectionDelayMax: 500, timeout: 5000,
  agent: opts.keepAlive ? new http.Agent({ keepAlive: true }) : false,
});

socket.on("connect_error", (err) => {
  const description = err.description;
  print({ connect_error: {
    message: err.message,
    // the transport's detail: Node's `ws` error event, or the polling request's status
    description: description && typeof description === "object" ? description.message : description,
    responseText: err.context && err.context.responseText,
    data: err.data, active: socket.active,
  } });
  if (opts.scenario === "acks") process.exit(1);
});
socket.io.on("reconnect_attempt", (n) => print({ reconnect_attempt: n }));

socket.on("disconnect", (reason) => print({ disconnect: reason }));

socket.on("connect", () => {
  if (opts.scenario === "connect") {
    print({ connected: true });
    if (!opts.stay) process.exit(0);
    return;
  }
  let acks = 0;
  for (let n = 0; n < opts.count; n++) {  // all in one turn: one polling POST
    socket.emit("join", { room: `acks-${n % 5}` }, (ack) => {
      if (ack && ack.ok) acks++;
      if (acks === opts.count) {
        print({ acks });
        process.exit(0);
      }
    });
  }
});
