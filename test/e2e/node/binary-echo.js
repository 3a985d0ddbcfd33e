// Sends one binary message with the ws library (the one wscat is built on) and exits 0 when the
// same bytes come back as a binary message. wscat itself sends only text.
//
// Usage: node binary-echo.js URL [HOST]
//   URL   ws:// or wss:// address to connect to (certificates are not checked)
//   HOST  Host header to send instead of the URL's (for a proxy that routes by host)
'use strict';

const crypto = require('crypto');
const WebSocket = require('ws');

const [url, host] = process.argv.slice(2);
if (!url) {
  console.error('usage: node binary-echo.js URL [HOST]');
  process.exit(2);
}
const payload = crypto.randomBytes(1024);
payload[0] = 0xff; // never valid UTF-8: the server must treat it as binary
const ws = new WebSocket(url, {
  headers: host ? { Host: host } : {},
  rejectUnauthorized: false,
});
const timer = setTimeout(() => {
  console.error('no echo within 10s');
  process.exit(1);
}, 10000);
ws.on('open', () => ws.send(payload, { binary: true }));
ws.on('message', (data, isBinary) => {
  clearTimeout(timer);
  if (!isBinary || !Buffer.from(data).equals(payload)) {
    console.error(`echo differs: binary=${isBinary}, ${data.length} bytes`);
    process.exit(1);
  }
  console.log(`binary echo of ${payload.length} bytes`);
  ws.close(1000);
});
ws.on('close', () => process.exit(0));
ws.on('error', (err) => {
  console.error(err.message);
  process.exit(1);
});
