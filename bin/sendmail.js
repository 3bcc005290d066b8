#!/usr/bin/env node
// The sendmail personality (also mailq, runq, mailrm, newaliases by name): a thin entry point into the
// bundled, import-light src/cli/sendmail-main.ts.
import { sendmailMain } from '../dist/bundle/sendmail.js';

process.exit(await sendmailMain(process.argv.slice(2), process.argv[1] ?? 'sendmail'));
