// Reference server, as in the seed article: Express + Socket.IO 4, a `join` event and
// a room `chat` event, and the Redis adapter when REDIS_URL is set (several processes).
// Usage: PORT=3000 [REDIS_URL=redis://127.0.0.1:6379] [RECOVERY=1] node node_server.js
// RECOVERY=1: Node doing what the template does per message: the Redis Streams adapter
// (every broadcast stored in a stream, read by every process) with connection-state
// recovery (each event carries its offset), and the template's message shape.
const crypto = require("crypto");
const express = require("express");
const http = require("http");
const { Server } = require("socket.io");

const recovery = process.env.RECOVERY === "1";
const app = express();
const server = http.createServer(app);
const io = new Server(server, recovery ? { connectionStateRecovery: {} } : {});

app.get("/health", (req, res) => res.json({ status: "ok" }));

io.on("connection", (socket) => {
  socket.on("join", (payload, ack) => {
    socket.join(payload.room);
    if (ack) ack({ ok: true, room: payload.room });
  });
  socket.on("chat", (payload, ack) => {
    const message = recovery
      ? { id: crypto.randomUUID().replaceAll("-", ""), room: payload.room, text: payload.text,
          sender: { id: "bench", name: "bench" }, ts: Date.now() }
      : { room: payload.room, text: payload.text, sender: socket.id, ts: Date.now() };
    io.to(payload.room).emit("chat", message);
    if (ack) ack({ ok: true });
  });
});

async function main() {
  if (process.env.REDIS_URL) {
    const { createClient } = require("redis");
    const pub = createClient({ url: process.env.REDIS_URL });
    if (recovery) {
      const { createAdapter } = require("@socket.io/redis-streams-adapter");
      await pub.connect();
      io.adapter(createAdapter(pub));
    } else {
      const { createAdapter } = require("@socket.io/redis-adapter");
      const sub = pub.duplicate();
      await Promise.all([pub.connect(), sub.connect()]);
      io.adapter(createAdapter(pub, sub));
    }
  }
  server.listen(Number(process.env.PORT || 3000), "127.0.0.1");
}
main();
