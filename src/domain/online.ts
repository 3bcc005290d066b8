/**
 * The answer online/ gives and route/ uses: are we online, on which connection, and which source said so.
 *
 * Plain data; cannot fail.
 */

/** What the network looks like now. */
export interface OnlineState {
  online: boolean;
  connection?: string;
  /** Which source said so, or why offline: shown in deferral reasons and the queue listing. */
  why?: string;
}
