// Bundles the sendmail command into one import-light file (plus lazily loaded chunks), so that a local
// program handing over a message pays for Node's start-up and little else.
import fs from 'node:fs';
import { build } from 'esbuild';

fs.rmSync('dist/bundle', { recursive: true, force: true });

await build({
  entryPoints: { sendmail: 'src/cli/sendmail-main.ts' },
  outdir: 'dist/bundle',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: 'none',
  banner: {
    js: "import { createRequire as __fmRequire } from 'node:module'; const require = __fmRequire(import.meta.url);",
  },
  logLevel: 'warning',
});
