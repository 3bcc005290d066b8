#!/usr/bin/env node
// ferrymail admin command: a thin entry point; the work is in src/cli/ferrymail-main.ts.
// Commits fsync in libuv's thread pool: more threads let concurrent sessions' fsyncs overlap (the disk
// merges them). It must be set before the first asynchronous file operation, hence the dynamic import.
process.env.UV_THREADPOOL_SIZE ??= '16';
const { ferrymailMain } = await import('../dist/src/cli/ferrymail-main.js');

process.exitCode = await ferrymailMain(process.argv.slice(2));
