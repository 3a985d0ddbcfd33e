'use strict';
// The Node.js peer of the echo benchmark (hack/bench-echo.sh): a plain `ws` WebSocketServer that
// echoes every message on /ws and pings every client on the same interval as the reference server,
// so that both do the same keep-alive work while connections are idle. It runs as one process, the
// way a ws server is usually deployed.
//
//   PORT=8081 PING_INTERVAL=10000 node server.js

const http = require('node:http');
const { WebSocketServer } = require('ws');

const port = Number(process.env.PORT || 8081);
const host = process.env.BIND_ADDRESS || '127.0.0.1';
const pingInterval = Number(process.env.PING_INTERVAL || 10000);
const maxPayload = Number(process.env.MAX_MESSAGE_BYTES || 64 * 1024);

const server = http.createServer((req, res) => {
  res.writeHead(req.url === '/health' ? 200 : 404, { 'Content-Type': 'text/plain' });
  res.end(req.url === '/health' ? 'ok\n' : 'not found\n');
});

const wss = new WebSocketServer({ server, path: '/ws', maxPayload });

wss.on('connection', (ws) => {
  ws.isAlive = true;
  ws.on('pong', () => {
    ws.isAlive = true;
  });
  ws.on('message', (data, isBinary) => {
    ws.send(data, { binary: isBinary });
  });
  // A client error (for example an oversized message) closes the socket; nothing to do but not crash.
  ws.on('error', () => {});
});

// The heartbeat of the ws documentation: a client that did not answer the previous ping is dropped.
const heartbeat = setInterval(() => {
  for (const ws of wss.clients) {
    if (!ws.isAlive) {
      ws.terminate();
      continue;
    }
    ws.isAlive = false;
    ws.ping();
  }
}, pingInterval);

wss.on('close', () => clearInterval(heartbeat));

server.listen(port, host, () => {
  console.error(`ws ${require('ws/package.json').version} echo on ws://${host}:${port}/ws, ping every ${pingInterval} ms`);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    for (const ws of wss.clients) ws.close(1001, 'going away');
    wss.close();
    server.close(() => process.exit(0));
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
