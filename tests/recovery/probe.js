// One official socket.io-client socket in /chat, driven by lines on stdin, reporting
// as JSON lines: every connect (id, recovered), every message (text, stream_id, offset).
const { io } = require("socket.io-client");
const [url, token, room] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const socket = io(url + "/chat", {
  transports: ["websocket"], auth: (cb) => cb({ token }),
  reconnectionDelay: 100, reconnectionDelayMax: 200,
});
socket.on("connect", () => {
  out({ connect: socket.id, recovered: socket.recovered });
  // a client that was not recovered joins (again): the documented pattern
  if (!socket.recovered) socket.emit("join", { room }, (ack) => out({ joined: ack.ok }));
});
socket.on("connect_error", (err) => out({ connect_error: err.message }));
socket.on("disconnect", (reason) => out({ disconnect: reason }));
socket.on("message", (m, offset) => out({ text: m.text, stream_id: m.stream_id, offset }));
require("readline").createInterface({ input: process.stdin }).on("line", (line) => {
  if (line === "cut") {  // the TCP connection dies (no close handshake); stay offline
    socket.io.reconnection(false);
    socket.io.engine.transport.ws._socket.destroy();
  } else if (line === "back") {
    // once the client has seen the cut: `reconnection(false)` also set the manager's
    // skipReconnect, which only a connect() made while disconnected clears
    const back = () => { socket.io.reconnection(true); socket.connect(); };
    if (socket.connected) socket.once("disconnect", back); else back();
  } else if (line === "exit") {
    process.exit(0);
  }
});
