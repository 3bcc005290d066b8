#!/usr/bin/env node
// ferrymail admin command and daemon: a thin entry point into the bundled src/cli/ferrymail-main.ts.
// CommonJS (bin/package.json), as every chunk of the bundle: no command starts Node's ES module loader
// (scripts/bundle.js).
// the chunks' bytecode from the build's code cache, when it matches (code-cache.js), for the commands
// whose start someone waits on; not for the daemon, which starts once and would hold half a megabyte
// more of bytecode for the rest of its life (functions the build's runs compiled that it never calls)
if (!process.argv.includes('daemon')) require('./code-cache.js');
const { ferrymailMain } = require('../dist/bundle/ferrymail/ferrymail.cjs');

let answered = false;

// a reader that went away (`ferrymail status | head -1`) ends the command quietly, as for any Unix tool
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code === 'EPIPE') process.exit(answered ? process.exitCode : 0);
    throw err;
  });
}

// until the command says otherwise: work that ended without an answer (nothing left to wait for, the
// promise never settled) is an internal error
process.exitCode = 70;
ferrymailMain(process.argv.slice(2)).then((code) => {
  answered = true;
  process.exitCode = code;
});
