#!/usr/bin/env node
// The sendmail personality (also mailq, runq, mailrm, newaliases and qmail-inject by name): a thin entry
// point into the bundled, import-light src/cli/sendmail-main.ts.
import { sendmailMain } from '../dist/bundle/sendmail.js';

// a reader that went away (`ferrymail status | head -1`) ends the command quietly, as for any Unix tool
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
}

process.exit(await sendmailMain(process.argv.slice(2), process.argv[1] ?? 'sendmail'));
