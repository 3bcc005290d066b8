// Bundles the sendmail and ferrymail commands into import-light files (plus lazily loaded chunks): a
// local program handing over a message pays for Node's start-up and little else, and the resident
// daemon holds one copy of far fewer module sources (3.7 MB less idle memory than the 200 separate
// modules it loaded before). What each command loads at start is one chunk, every chunk is CommonJS,
// and built-ins are required rather than imported (the three steps after esbuild, below).
//
// Each command is a build of its own, in a folder of its own: built together, their shared code would
// be cut into more, smaller chunks, and every extra file costs sendmail's start-up a module load. The
// local delivery agent and the envelope reader's worker are spawned from a path next to the module that
// starts them, so each folder gets a one-file copy of both.
import fs from 'node:fs';
import path from 'node:path';
import { build, transform } from 'esbuild';

fs.rmSync('dist/bundle', { recursive: true, force: true });

const BANNER =
  "import { createRequire as __fmRequire } from 'node:module'; const require = __fmRequire(import.meta.url);";

const common = {
  bundle: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  minifyWhitespace: true,
  minifySyntax: true,
  legalComments: 'none',
  banner: { js: BANNER },
  logLevel: 'warning',
};

// A static import of a Node built-in becomes a require() through the banner's createRequire: an import
// builds an ES module facade that reads every export of the module once, and reading fs's exports runs
// its lazy getters, which load fs/promises and the file streams. In sendmail's start-up the facades and
// what they pulled in cost about 10 ms of the 60 above Node's own start. Built-ins are the same objects
// either way; only the names imported are bound at load instead of live, which no built-in changes.
const BUILTIN_IMPORT = /(?<=^|[;}\n])import\s*(\{[^{}]*\}|[A-Za-z_$][\w$]*)\s*from\s*"(node:[\w/]+)";?/g;

/** The rewrite: each import is taken out where esbuild put it (where its module's code begins) and its
 * require() goes right after the banner, so that every built-in is bound before any code of the file
 * runs, as an import would have been (hoisted). Only imports at a statement's start are taken; any
 * other import of a built-in left over fails the build. */
function requireBuiltins(code, file) {
  if (!code.startsWith(BANNER)) throw new Error(`${file}: no banner`);
  const requires = [];
  const body = code.slice(BANNER.length).replace(BUILTIN_IMPORT, (_all, binding, id) => {
    if (/\bdefault\b/.test(binding)) throw new Error(`${file}: a default import by name from ${id}`);
    const target = binding.startsWith('{') ? binding.replace(/\s+as\s+/g, ':') : binding;
    requires.push(`const ${target}=require(${JSON.stringify(id)});`);
    return '';
  });
  const left = /\bfrom\s*"node:[\w/]+"|\bimport\s*"node:/.exec(body);
  if (left) throw new Error(`${file}: an import of a built-in this build does not turn into require(): ${left[0]}`);
  return `${BANNER}\n${requires.join('')}${body}`;
}

function rewriteBuiltinImports(dir) {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (!entry.isFile() || !entry.name.endsWith('.js')) continue;
    const file = `${dir}/${entry.name}`;
    fs.writeFileSync(file, requireBuiltins(fs.readFileSync(file, 'utf8'), file));
  }
}

/** The modules this build's code loads with import() (read from a trial build's metafile). */
function importedLazily(metafile, entry) {
  const lazy = new Set();
  for (const input of Object.values(metafile.inputs))
    for (const imp of input.imports) if (imp.kind === 'dynamic-import' && !imp.external) lazy.add(imp.path);
  lazy.delete(entry);
  return lazy;
}

// Every module a command imports lazily runs after the entry has loaded, and is built as if it said so:
// it gets an `import` of the entry in front. esbuild cuts shared code into one chunk per set of entry
// points that reach it; without this, the code the entry loads at start was cut into 18 files, each a
// resolve, read, compile and link for Node's ES module loader, by which lazily loaded modules used it. With it,
// all of it is reached by the same set and lands in one chunk: sendmail loads 3 files instead of 19. The
// lazily loaded modules' own code still stays in chunks of their own. A module that the entry also
// reaches statically gets a cycle back to the entry, which changes no order of evaluation: both entries
// only declare functions.
function afterEntry(lazy, entry) {
  return {
    name: 'after-entry',
    setup(b) {
      b.onLoad({ filter: /\.ts$/ }, (args) => {
        if (!lazy.has(path.relative(process.cwd(), args.path))) return undefined;
        const source = fs.readFileSync(args.path, 'utf8');
        return {
          contents: `import ${JSON.stringify(path.resolve(entry))};\n${source}`,
          loader: 'ts',
          resolveDir: path.dirname(args.path),
        };
      });
    },
  };
}

// Some of smtp-server's imports are given lighter stand-ins, for smtp-server alone, so that what a
// server without TLS never uses is not loaded at the daemon's start (some 1.4 MB of its idle memory):
// - nodemailer's shared helpers, of which it takes getLogger(): that module loads nodemailer's HTTP
//   client (node:http, node:https, node:zlib) for a logger ferrymail turns off;
// - node:tls, loaded on first use; FerryServer makes no TLS context for a server that offers no TLS;
// - node:crypto: random bytes from the kernel's pool (src/random.ts), hashes loading it on first use;
// - its ./tls-options.js, whose defaults are computed (a hash) when it loads: the same module, bundled
//   behind a require() that runs it on first use.
// nodemailer's own modules (the delivery side, loaded when it first delivers) keep the real ones.
const FOR_SMTP_SERVER = {
  'nodemailer/lib/shared': 'src/receive/smtp-server-shared.ts',
  'node:tls': 'src/receive/smtp-server-tls.ts',
  'node:crypto': 'src/receive/smtp-server-crypto.ts',
  './tls-options.js': 'src/receive/smtp-server-tls-options.ts',
};
const smtpServerStandIns = {
  name: 'smtp-server-stand-ins',
  setup(b) {
    b.onResolve({ filter: /^(nodemailer\/lib\/shared|node:tls|node:crypto|\.\/tls-options\.js)$/ }, (args) =>
      args.importer.includes(`${path.sep}node_modules${path.sep}smtp-server${path.sep}`)
        ? { path: path.resolve(FOR_SMTP_SERVER[args.path]) }
        : undefined,
    );
  },
};

// Every chunk of a command is CommonJS (.cjs), and the bin/ scripts that require them are too: Node
// starts its ES module loader only when something is imported, and that loader's start and its resolve,
// load and link of each file cost sendmail about 13 ms (1.47 -> 1.34 x `node -e 0`), and each ferrymail
// command about 16 ms; the daemon idles 0.7 MB smaller without it. An import() of a chunk or a built-in
// becomes a require() in a promise, asked when the import was; one of anything else (a hook module
// named by the configuration, which may be an ES module) stays an import(). Between chunks the
// exports are esbuild's getters on module.exports: one copy of every module's state, bindings live.
async function toCommonJs(dir, files) {
  const renamed = (code) => files.reduce((c, f) => c.replaceAll(`"./${f}"`, `"./${f.replace(/\.js$/, '.cjs')}"`), code);
  for (const name of files) {
    const file = `${dir}/${name}`;
    const code = renamed(fs.readFileSync(file, 'utf8'));
    if (!code.startsWith(BANNER)) throw new Error(`${file}: no banner to take off`);
    const body = code.slice(BANNER.length); // CommonJS has require already
    const out = await transform(body, {
      format: 'cjs',
      platform: 'node',
      target: 'node20',
      minifyWhitespace: true,
      define: { 'import.meta.url': '__fmUrl.href' },
      logLevel: 'warning',
    });
    if (/\bimport\.meta\b/.test(out.code)) throw new Error(`${file}: import.meta is left`);
    // the module's URL made when first asked for (most chunks ask only inside functions): making it at
    // load was a few tenths of a millisecond of every command's start
    const url = body.includes('import.meta.url')
      ? 'var __fmUrl={get href(){return require("node:url").pathToFileURL(__filename).href}};'
      : '';
    const required = out.code.replace(
      /\bimport\("(\.\/[^"]+\.cjs|node:[\w/]+)"\)/g,
      'Promise.resolve().then(()=>require("$1"))',
    );
    // an import() of a named file left behind would start the loader again, unnoticed
    const left = /\bimport\(\s*["']/.exec(required);
    if (left)
      throw new Error(
        `${file}: an import() this build does not turn into require(): ${required.slice(left.index, left.index + 60)}`,
      );
    fs.writeFileSync(file.replace(/\.js$/, '.cjs'), `"use strict";${url}${required}`);
    fs.unlinkSync(file);
  }
}

for (const [name, entry, outdir] of [
  ['sendmail', 'src/cli/sendmail-main.ts', 'dist/bundle'],
  ['ferrymail', 'src/cli/ferrymail-main.ts', 'dist/bundle/ferrymail'],
]) {
  const command = { ...common, entryPoints: { [name]: entry }, outdir, splitting: true, plugins: [smtpServerStandIns] };
  const trial = await build({ ...command, write: false, metafile: true });
  const built = await build({
    ...command,
    metafile: true,
    plugins: [smtpServerStandIns, afterEntry(importedLazily(trial.metafile, entry), entry)],
  });
  await build({
    ...common,
    entryPoints: { agent: 'src/transport/local/agent.ts', 'scan-worker': 'src/spool/scan-worker.ts' },
    outdir,
  });
  rewriteBuiltinImports(outdir);
  await toCommonJs(
    outdir,
    Object.keys(built.metafile.outputs).map((f) => path.basename(f)),
  );
}
