// Node peer for `chroma-bench disk`: random fs.read calls of READ_BYTES (default 4 KiB)
// through libuv's thread pool against a page-cached file, `concurrency` reads in
// flight, for `seconds`.
//
//   node disk.js FILE CONCURRENCY SECONDS [READ_BYTES]
//
// Prints one line: "ops_per_s <n> p50_us <n> p99_us <n>".
'use strict';
const fs = require('fs');

const [file, concurrencyArg, secondsArg, readBytesArg] = process.argv.slice(2);
if (!file) {
  console.error('usage: node disk.js FILE CONCURRENCY SECONDS [READ_BYTES]');
  process.exit(2);
}
const concurrency = Number(concurrencyArg || 64);
const seconds = Number(secondsArg || 2);
const readBytes = Number(readBytesArg || 4096);
const fd = fs.openSync(file, 'r');
const blocks = Math.floor(fs.fstatSync(fd).size / readBytes);
const latencies = [];
const start = process.hrtime.bigint();
const deadline = start + BigInt(Math.round(seconds * 1e9));
let lastCompletion = start;
let running = concurrency;

function issue(buffer) {
  const offset = Math.floor(Math.random() * blocks) * readBytes;
  const issued = process.hrtime.bigint();
  fs.read(fd, buffer, 0, readBytes, offset, (err, n) => {
    if (err || n !== readBytes) throw err || new Error(`short read ${n}`);
    const now = process.hrtime.bigint();
    latencies.push(Number(now - issued));
    if (now < deadline) {
      issue(buffer);
    } else {
      if (now > lastCompletion) lastCompletion = now;
      if (--running === 0) finish();
    }
  });
}

function finish() {
  fs.closeSync(fd);
  const elapsed = Number(lastCompletion - start) / 1e9;
  latencies.sort((a, b) => a - b);
  const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))] / 1e3;
  console.log(`ops_per_s ${(latencies.length / elapsed).toFixed(0)} p50_us ${pct(0.5).toFixed(1)} p99_us ${pct(0.99).toFixed(1)}`);
}

for (let i = 0; i < concurrency; i++) issue(Buffer.allocUnsafe(readBytes));
