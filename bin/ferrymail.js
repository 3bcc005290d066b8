#!/usr/bin/env node
// ferrymail admin command and daemon: a thin entry point into the bundled src/cli/ferrymail-main.ts.
import { ferrymailMain } from '../dist/bundle/ferrymail/ferrymail.js';

// a reader that went away (`ferrymail status | head -1`) ends the command quietly, as for any Unix tool
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
}

process.exitCode = await ferrymailMain(process.argv.slice(2));
