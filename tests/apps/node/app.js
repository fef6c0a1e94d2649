// An HTTP program for mod_procd's `http` protocol (no npm dependencies).
//
// Under mod_procd it serves on the listening socket the manager passes as
// fd 3 (LISTEN_FDS=1); with listen=tcp, and run by hand, on PORT
// (default 8080) on 127.0.0.1:
//   PORT=8080 node app.js
// The URL it sees is the one the client asked for, mount prefix included;
// X-Forwarded-Prefix names the prefix, and routes are matched below it.
//
// On SIGTERM (the manager drains an old generation) it stops accepting,
// closes idle keep-alive connections, lets requests in flight and open
// WebSockets finish, and exits when nothing is left.
'use strict';
const http = require('http');
const crypto = require('crypto');

const routes = {
  '/hello': (req, res) => text(res, 200, 'Hello, World!\n'),

  '/env': (req, res) => body(req, (data) => {
    json(res, 200, {
      method: req.method,
      url: req.url,
      httpVersion: req.httpVersion,
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      body: data.toString('latin1'),
      pid: process.pid,
      env: pick(process.env, ['PROCD_GROUP', 'PROCD_GENERATION', 'PROCD_PROTOCOL', 'PROCD_SOCKET',
        'LISTEN_FDS', 'LISTEN_PID', 'LISTEN_FDNAMES', 'USER', 'HOME', 'PORT', 'PROCD_PORT']),
    });
  }),

  '/whoami': (req, res) => text(res, 200,
    `pid=${process.pid} gen=${process.env.PROCD_GENERATION || ''} conn=${req.socket.procdId}\n`),

  '/sha256': (req, res) => {
    const h = crypto.createHash('sha256');
    let n = 0;
    req.on('data', (c) => { h.update(c); n += c.length; });
    req.on('end', () => text(res, 200, `${h.digest('hex')} ${n}\n`));
  },

  // First chunk, then the last one `gap` ms later (streaming).
  '/stream': (req, res) => {
    const gap = Number(query(req).get('gap') || 500);
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.write('first\n');
    setTimeout(() => res.end('last\n'), gap);
  },

  '/redirect': (req, res) => {
    res.writeHead(302, { Location: `${prefix(req)}/hello` });
    res.end();
  },

  '/cookies': (req, res) => {
    res.setHeader('Set-Cookie', ['a=1; Path=/', 'b=2, with comma; Path=/; HttpOnly']);
    text(res, 200, 'cookies\n');
  },

  // Hop-by-hop headers that must not reach the client.
  '/hop': (req, res) => {
    res.writeHead(200, {
      'Content-Type': 'text/plain',
      Connection: 'X-Secret',
      'X-Secret': 'hop',
      'Keep-Alive': 'timeout=5',
      'Proxy-Authenticate': 'Basic',
      Upgrade: 'h2c',
      'X-Kept': 'yes',
    });
    res.end(JSON.stringify(req.headers) + '\n');
  },

  '/throw': () => { throw new Error('deliberate failure for the test'); },

  '/stderr': (req, res) => {
    console.error(`stderr-marker-${query(req).get('m') || ''}`);
    text(res, 200, 'logged\n');
  },

  '/slow': (req, res) => {
    setTimeout(() => text(res, 200, 'slow\n'), Number(query(req).get('ms') || 1000));
  },

  // The process dies in the middle of a request.
  '/crash': (req, res) => {
    if (query(req).get('after') === 'head') {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.write('partial\n');
    }
    setTimeout(() => process.exit(3), 50);
  },

  // Many chunks (a large streamed body).
  '/big': (req, res) => {
    const n = Number(query(req).get('n') || 1000);
    res.writeHead(200, { 'Content-Type': 'application/octet-stream' });
    let i = 0;
    const more = () => {
      while (i < n) {
        i++;
        if (!res.write(Buffer.alloc(1024, i % 256))) return res.once('drain', more);
      }
      res.end();
    };
    more();
  },
};

function pick(obj, keys) {
  const out = {};
  for (const k of keys) if (obj[k] !== undefined) out[k] = obj[k];
  return out;
}

function prefix(req) {
  const p = req.headers['x-forwarded-prefix'] || '';
  return /^\/[^\s]*$/.test(p) ? p : '';
}

function query(req) {
  return new URL(req.url, 'http://x').searchParams;
}

function text(res, status, t) {
  res.writeHead(status, { 'Content-Type': 'text/plain', 'Content-Length': Buffer.byteLength(t) });
  res.end(t);
}

function json(res, status, obj) {
  const t = JSON.stringify(obj);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(t) });
  res.end(t);
}

function body(req, done) {
  const parts = [];
  req.on('data', (c) => parts.push(c));
  req.on('end', () => done(Buffer.concat(parts)));
}

function route(req, res) {
  const path = new URL(req.url, 'http://x').pathname;
  const p = prefix(req);
  const rest = p && path.startsWith(p) ? path.slice(p.length) || '/' : path;
  const handler = routes[rest];
  try {
    if (handler) return handler(req, res);
    text(res, 404, `no route for ${rest}\n`);
  } catch (e) {
    // The app's own 500: the stack goes to stderr (the group's log).
    console.error(`app error on ${req.method} ${req.url}: ${e.stack}`);
    if (!res.headersSent) text(res, 500, 'Internal Server Error (the app caught an exception)\n');
    else res.destroy();
  }
}

const server = http.createServer(route);
// End-to-end 100-continue: /sha256?refuse=1 answers without reading the body.
server.on('checkContinue', (req, res) => {
  if (query(req).get('refuse')) return text(res, 413, 'refused without reading the body\n');
  res.writeContinue();
  route(req, res);
});

// ---- WebSocket echo on /ws (RFC 6455 by hand) ----
const sockets = new Set();
server.on('upgrade', (req, socket, head) => {
  const path = new URL(req.url, 'http://x').pathname;
  const key = req.headers['sec-websocket-key'];
  if (!path.endsWith('/ws') || (req.headers.upgrade || '').toLowerCase() !== 'websocket' || !key) {
    socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
    return;
  }
  const accept = crypto.createHash('sha1').update(key + '258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest('base64');
  socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
    `Sec-WebSocket-Accept: ${accept}\r\nX-Pid: ${process.pid}\r\nX-Generation: ${process.env.PROCD_GENERATION || ''}\r\n\r\n`);
  sockets.add(socket);
  socket.setNoDelay && socket.setNoDelay(true);
  let buf = head && head.length ? Buffer.from(head) : Buffer.alloc(0);
  const onData = (chunk) => {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    for (;;) {
      const f = parseFrame(buf);
      if (!f) break;
      buf = buf.subarray(f.used);
      if (f.opcode === 0x8) { // close: answer it, then end
        socket.end(frame(0x8, f.payload.subarray(0, 2)));
        return;
      }
      if (f.opcode === 0x9) { socket.write(frame(0xA, f.payload)); continue; }
      if (f.opcode === 0xA) continue;
      socket.write(frame(f.opcode, f.payload, f.fin));
    }
  };
  socket.on('data', onData);
  socket.on('end', () => socket.end());
  socket.on('error', () => socket.destroy());
  socket.on('close', () => { sockets.delete(socket); maybeExit(); });
  if (buf.length) onData(Buffer.alloc(0));
});

function parseFrame(b) {
  if (b.length < 2) return null;
  const fin = (b[0] & 0x80) !== 0;
  const opcode = b[0] & 0x0f;
  const masked = (b[1] & 0x80) !== 0;
  let len = b[1] & 0x7f;
  let off = 2;
  if (len === 126) { if (b.length < 4) return null; len = b.readUInt16BE(2); off = 4; }
  else if (len === 127) { if (b.length < 10) return null; len = Number(b.readBigUInt64BE(2)); off = 10; }
  const maskLen = masked ? 4 : 0;
  if (b.length < off + maskLen + len) return null;
  const mask = masked ? b.subarray(off, off + 4) : null;
  const payload = Buffer.from(b.subarray(off + maskLen, off + maskLen + len));
  if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
  return { fin, opcode, payload, used: off + maskLen + len };
}

function frame(opcode, payload, fin = true) {
  const len = payload.length;
  let head;
  if (len < 126) { head = Buffer.from([(fin ? 0x80 : 0) | opcode, len]); }
  else if (len < 65536) { head = Buffer.alloc(4); head[0] = (fin ? 0x80 : 0) | opcode; head[1] = 126; head.writeUInt16BE(len, 2); }
  else { head = Buffer.alloc(10); head[0] = (fin ? 0x80 : 0) | opcode; head[1] = 127; head.writeBigUInt64BE(BigInt(len), 2); }
  return Buffer.concat([head, payload]);
}

// ---- listening and draining ----
let closing = false;
function maybeExit() {
  if (closing && sockets.size === 0 && open === 0) process.exit(0);
}
let open = 0;
let connSeq = 0;
server.on('connection', (s) => {
  open++;
  s.procdId = ++connSeq;
  s.on('close', () => { open--; maybeExit(); });
});

process.on('SIGTERM', () => {
  if (closing) return;
  closing = true;
  server.close();
  server.closeIdleConnections();
  maybeExit();
});

if (process.env.LISTEN_FDS === '1' && process.env.LISTEN_PID === String(process.pid)) {
  server.listen({ fd: 3 });
} else {
  server.listen(Number(process.env.PORT || 8080), process.env.HOST || '127.0.0.1');
}
