/**
 * Puts an envelope into queue/ or hold/ durably, over any envelope of the same id there: written to a
 * temporary file of this process (tmp/ID.PID.upd), fsynced, renamed into place, the folder fsynced (the
 * directory syncs shared with concurrent callers). Used for every rewrite of a queued message's envelope
 * (store.ts) and by recovery's roll-forward of an answered message (recovery.ts).
 *
 * Trusts the spool (checked by the caller). Fails with a FerryError of the spool kinds; a write that fails
 * before the rename leaves no file behind.
 */
import fs from 'node:fs';
import type { Envelope } from '../domain/envelope.js';
import { spoolError } from '../errors.js';
import { encodeEnvelope } from './envelope-codec.js';
import { DirSyncer, type Layout } from './layout.js';

/** Writes env as the envelope in `place`: temp, fsync, rename over, fsync the directory. */
export async function replaceEnvelope(layout: Layout, env: Envelope, place: 'queue' | 'hold'): Promise<void> {
  const tmp = `${layout.dir('tmp')}/${env.id}.${process.pid}.upd`;
  let renamed = false;
  try {
    await fs.promises.rm(tmp, { force: true });
    const fh = await fs.promises.open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(encodeEnvelope(env));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.promises.rename(tmp, layout.envelope(place, env.id));
    renamed = true;
    await DirSyncer.of(layout.dir(place)).sync();
  } catch (err) {
    // a write that failed (a full disk) leaves nothing behind
    if (!renamed) await fs.promises.rm(tmp, { force: true }).catch(() => undefined);
    throw spoolError(err, `update ${env.id}`);
  }
}
