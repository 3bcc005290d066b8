#!/usr/bin/env node
// ferrymail admin command: a thin entry point; the work is in src/cli/ferrymail-main.ts.
import { ferrymailMain } from '../dist/src/cli/ferrymail-main.js';

process.exitCode = await ferrymailMain(process.argv.slice(2));
