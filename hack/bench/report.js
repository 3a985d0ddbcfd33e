'use strict';
// Turns the JSON that hack/bench-echo.sh writes into one directory into a markdown report.
//
//   node hack/bench/report.js .local/bench/echo-20260101T000000Z

const fs = require('node:fs');
const path = require('node:path');

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node report.js RESULTS_DIR');
  process.exit(2);
}
const read = (f) => JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
const machine = read('machine.json');
const records = fs
  .readdirSync(dir)
  .filter((f) => /^(memory|throughput|max)-.*\.json$/.test(f) && !f.includes('.client'))
  .sort()
  .map(read);

const KiB = 1024;
const MiB = 1024 * 1024;
const fixed = (v, d = 1) => (v === null || v === undefined || Number.isNaN(v) ? 'n/a' : v.toFixed(d));
const int = (v) => Math.round(v).toLocaleString('en-US');
const ms = (s) => fixed(s * 1000, 1);
const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;
const clients = (r) => r.clients.filter(Boolean);
const sum = (r, key) => clients(r).reduce((a, c) => a + (c[key] || 0), 0);
const merged = (r, key) => {
  const m = {};
  for (const c of clients(r)) for (const [k, v] of Object.entries(c[key] || {})) m[k] = (m[k] || 0) + v;
  const parts = Object.entries(m).map(([k, v]) => `${k}: ${int(v)}`);
  return parts.length ? parts.join(', ') : 'none';
};
const missing = (r) => {
  const n = r.clients.length - clients(r).length;
  return n ? ` (${n} client summaries missing)` : '';
};
const phase = (p) => records.filter((r) => r.phase === p);

// Memory per connection: what the resident set grew by, over the connections the server held.
const perConn = (r) => ((r.loadedRssKiB - r.baselineRssKiB) * KiB) / r.held;
const goPerConn = (r) =>
  r.loadedHeapInuse === null || r.baselineHeapInuse === null
    ? null
    : (r.loadedHeapInuse - r.baselineHeapInuse + r.loadedStackInuse - r.baselineStackInuse) / r.held;

const lines = [];
const p = (s = '') => lines.push(s);
const s = machine.settings;

p(`Run ${machine.date} (commit ${machine.commit}).`);
p();
p('| machine | |');
p('|---|---|');
p(`| CPU | ${machine.nproc} × ${machine.cpu} (shared with other work) |`);
p(`| memory | ${fixed(machine.memTotalKiB / MiB, 1)} GiB |`);
p(`| kernel | ${machine.kernel} |`);
p(`| Go | ${machine.go} |`);
p(`| Node.js | ${machine.node}, ws ${machine.ws} |`);
const endLoad = path.join(dir, 'loadavg-end.txt');
p(`| load average (1, 5, 15 min) | at start ${machine.loadavg}` +
  (fs.existsSync(endLoad) ? `; at end ${fs.readFileSync(endLoad, 'utf8').trim()}` : '') + ' |');
p(`| RLIMIT_NOFILE (hard) | ${machine.nofileHard}; raising it: \`${machine.nofileRaise}\` |`);
p(`| net.core.somaxconn | ${machine.somaxconn} |`);
p();

p(`### Resident memory per idle connection`);
p();
p(
  `Connections opened at ${int(s.rate)}/s, then held idle for ${s.idleSeconds} s (both servers ping every ` +
    `${s.pingMs / 1000} s); per connection = (RSS loaded − RSS before) / connections held. State: ` +
    `never-sent connections sent no message; after-traffic connections each exchanged one ` +
    `${int(s.trafficMessageBytes || 0)}-byte echo within 2 s of opening, then idled.`,
);
p();
const state = (r) => r.state || 'never-sent';
p('| server | state | connections held | RSS before | RSS loaded | RSS peak | **RSS per connection** | Go heap + stack per connection | dial errors | abnormal drops |');
p('|---|---|---:|---:|---:|---:|---:|---:|---|---:|');
for (const r of phase('memory').sort(
  (a, b) => a.target - b.target || state(b).localeCompare(state(a)) || a.label.localeCompare(b.label),
)) {
  const g = goPerConn(r);
  p(
    `| ${r.label} | ${state(r)} | ${int(r.held)} of ${int(r.target)} | ${fixed(r.baselineRssKiB / KiB)} MiB | ` +
      `${fixed(r.loadedRssKiB / KiB)} MiB | ${fixed(r.peakRssKiB / KiB)} MiB | **${fixed(perConn(r) / KiB)} KiB** | ` +
      `${g === null ? '–' : fixed(g / KiB) + ' KiB'} | ${merged(r, 'dialErrors')} | ${int(sum(r, 'abnormalDrops'))}${missing(r)} |`,
  );
}
p();
const headline = (server, n, st) =>
  phase('memory').find((r) => r.server === server && r.target === n && state(r) === st && !r.label.includes('GOGC'));
for (const n of [s.small, s.large]) {
  for (const st of ['never-sent', 'after-traffic']) {
    const g = headline('go', n, st);
    const nd = headline('node', n, st);
    if (g && nd) p(`- At ${int(n)} connections (${st}) the Node.js peer uses **${fixed(perConn(nd) / perConn(g))}×** the memory per connection of wsecho.`);
  }
}
p();
p('Extrapolation, not measured: baseline + per-connection figure at the largest measured count × N.');
p();
p('| server | per connection | 50,000 connections | 100,000 connections |');
p('|---|---:|---:|---:|');
for (const r of phase('memory').filter((r) => r.target === s.large && state(r) === 'never-sent')) {
  const at = (n) => `≈ ${fixed((r.baselineRssKiB * KiB + perConn(r) * n) / MiB, 0)} MiB`;
  p(`| ${r.label} | ${fixed(perConn(r) / KiB)} KiB | ${at(50000)} | ${at(100000)} |`);
}
p();

p(`### Echo throughput`);
p();
p(
  `${int(s.floodConnections)} connections, each sending its next ${s.floodMessageBytes}-byte text message as soon as ` +
    `the echo of the previous one arrives, for ${s.floodSeconds} s. messages/s = echoes received / whole run ` +
    `(ramp-up and close included). Server CPU = its user + system time over the run.`,
);
p();
p('| server | connections | **messages/s** | round trip p50 | p90 | **p99** | max | server CPU (cores busy) | server CPU per message | load client CPU (cores busy) | dial errors | abnormal drops |');
p('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|');
const tput = {};
const cpuPerMsg = {};
for (const r of phase('throughput')) {
  const c = clients(r)[0] || { roundTrip: {} };
  tput[r.server] = sum(r, 'messagesPerSecond');
  cpuPerMsg[r.server] = r.serverCpuSeconds / sum(r, 'messagesReceived');
  p(
    `| ${r.label} | ${int(sum(r, 'opened'))} | **${int(tput[r.server])}** | ${ms(c.roundTrip.p50)} ms | ` +
      `${ms(c.roundTrip.p90)} ms | **${ms(c.roundTrip.p99)} ms** | ${ms(c.roundTrip.max)} ms | ` +
      `${fixed(r.serverCpuSeconds)} s (${fixed(r.serverCpuSeconds / r.wallSeconds, 2)}) | ${fixed(cpuPerMsg[r.server] * 1e6)} µs | ` +
      `${fixed(r.clientCpuSeconds)} s (${fixed(r.clientCpuSeconds / r.wallSeconds, 2)}) | ${merged(r, 'dialErrors')} | ` +
      `${int(sum(r, 'abnormalDrops'))}${missing(r)} |`,
  );
}
p();
if (tput.go && tput.node) {
  p(`- wsecho echoes **${fixed(tput.go / tput.node, 2)}×** the messages per second of the Node.js peer.`);
  p(`- The Node.js peer spends **${fixed(cpuPerMsg.node / cpuPerMsg.go, 2)}×** the CPU time per echoed message of wsecho.`);
}
p();

p(`### Most connections held`);
p();
p(
  `${int(s.maxTarget)} connections attempted at ${int(s.rate)}/s from ${plural(Math.ceil(s.maxTarget / s.connectionsPerClientProcess), 'load client process', 'load client processes')}, with the servers' connection limits raised; held = sockets the server process had open.`,
);
p();
p('| server | attempted | held by the server | opened (clients) | dial errors by kind | server RSS | server RSS peak |');
p('|---|---:|---:|---:|---|---:|---:|');
for (const r of phase('max')) {
  p(
    `| ${r.label} | ${int(r.target)} | **${int(r.held)}** | ${int(sum(r, 'opened'))} | ${merged(r, 'dialErrors')}${missing(r)} | ` +
      `${fixed(r.loadedRssKiB / KiB)} MiB | ${fixed(r.peakRssKiB / KiB)} MiB |`,
  );
}
p();

const bench = path.join(dir, 'go-bench.txt');
if (fs.existsSync(bench)) {
  p('### Go benchmark IdleConnectionMemory');
  p();
  p('```');
  for (const l of fs.readFileSync(bench, 'utf8').split('\n')) if (/^(Benchmark|goos|goarch|cpu|ok)/.test(l)) p(l);
  p('```');
  p();
}

process.stdout.write(lines.join('\n'));
