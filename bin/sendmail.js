#!/usr/bin/env node
// The sendmail personality (also mailq, runq, mailrm, newaliases and qmail-inject by name): a thin entry
// point into the bundled, import-light src/cli/sendmail-main.ts. CommonJS (bin/package.json), as every
// chunk of the bundle: no mode starts Node's ES module loader (scripts/bundle.js).
// the chunks' bytecode from the build's code cache, when it matches (code-cache.js)
require('./code-cache.js');
const { sendmailMain } = require('../dist/bundle/sendmail.cjs');

// a reader that went away (`mailq | head -1`) ends the command quietly, as for any Unix tool. The handler
// is added when a stream is first asked for, not here: Node makes process.stdout and process.stderr at
// their first use, and for a pipe that loads node:net and node:stream, which a submission never needs
const quietEpipe = (err) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
};
for (const name of ['stdout', 'stderr']) {
  const own = Object.getOwnPropertyDescriptor(process, name);
  let made;
  Object.defineProperty(process, name, {
    configurable: true,
    enumerable: own.enumerable,
    get() {
      if (!made) {
        made = own.get.call(process);
        made.on('error', quietEpipe);
      }
      return made;
    },
  });
}

// until the command says otherwise: work that ended without an answer (nothing left to wait for, the
// promise never settled) is an internal error, not a message accepted
process.exitCode = 70;
sendmailMain(process.argv.slice(2), process.argv[1] ?? 'sendmail').then((code) => process.exit(code));
