/**
 * The worker thread of envelope-file.ts's readSlices(): each message is a slice (its first index and
 * its file paths, joined by NUL, which no path holds), answered by one message with the same index and
 * the files' contents and stamps (or errors; read as the slice's mode says), in the order asked. The
 * caller terminates it once it has what it needs. Reads only: it never moves, writes or removes a file.
 */
import { parentPort } from 'node:worker_threads';
import { type ReadMode, readRaw } from './envelope-file.js';

parentPort!.on('message', ({ from, files, mode }: { from: number; files: string; mode: ReadMode }) =>
  parentPort!.postMessage({ from, results: files.split('\0').map((f) => readRaw(f, mode)) }),
);
