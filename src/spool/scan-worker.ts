/**
 * The worker thread of envelope-file.ts's readSlices(): each message is a slice (its first index and
 * its file paths, joined by NUL, which no path holds), answered by one message with the same index and
 * the files' contents and stamps (or errors), in the order asked. The caller terminates it once it has
 * what it needs. Reads only: it never moves, writes or removes a file.
 */
import { parentPort } from 'node:worker_threads';
import { readRaw } from './envelope-file.js';

parentPort!.on('message', ({ from, files }: { from: number; files: string }) =>
  parentPort!.postMessage({ from, results: files.split('\0').map(readRaw) }),
);
