#!/usr/bin/env node
// ferrymail admin command: a thin entry point; the work is in src/cli/ferrymail-main.ts.
import { ferrymailMain } from '../dist/src/cli/ferrymail-main.js';

// a reader that went away (`ferrymail status | head -1`) ends the command quietly, as for any Unix tool
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
}

process.exitCode = await ferrymailMain(process.argv.slice(2));
