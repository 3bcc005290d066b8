/**
 * The worker thread of envelope-file.ts's readSlices(): each message is a slice's file paths, answered
 * by one message with their contents and stamps (or errors), in the order asked. The caller terminates
 * it once it has what it needs. Reads only: it never moves, writes or removes a file.
 */
import { parentPort } from 'node:worker_threads';
import { readRaw } from './envelope-file.js';

parentPort!.on('message', (files: string[]) => parentPort!.postMessage(files.map(readRaw)));
