// Compiles the bundle's chunks with V8's code cache: the bytecode of each chunk's functions, saved by the
// build (scripts/code-cache.js) after a run of the commands, is loaded with the chunk's source instead of
// compiling it again. Node 20 has no compile cache of its own for user code (it came in Node 22), and
// parsing and compiling the chunks was about a third of what the sendmail command costs above Node's start.
//
// What it trusts: a cache file is code. It is read only when it is a regular file of the chunk's own
// owner (or root), writable by no one else, of a sane size: the rule the hook loader applies to hook
// modules. Such a file is trusted as the chunk beside it is (V8 does not check its data: bytes damaged
// on disk can crash the process, as a damaged chunk can). A cache is used only for the very source it
// was made from, so a chunk rebuilt or edited by hand is compiled from its source; V8 itself refuses a
// cache made by another version of V8 or under other flags. A cache that cannot be used, for whatever
// reason, compiles the chunk from its source: the command is slower, not broken. A chunk that holds an
// import() is always left to Node.
//
// FERRYMAIL_CODE_CACHE=write makes the process write, at its exit, a cache for each chunk it compiled
// without one, beside chunks that are its own (the build sets it; nothing else should).
'use strict';
const fs = require('node:fs');
const Module = require('node:module');
const path = require('node:path');
const vm = require('node:vm');

const mainModule = require.main;
/** The bundle's folder as Node names the chunks it loads: their real paths (dist/ may be a link). */
const BUNDLE = bundleDir();
const SUFFIX = '.v8cache';
const writing = process.env.FERRYMAIL_CODE_CACHE === 'write';
/** What happened to each chunk compiled here: 'used', 'none', 'stale', 'untrusted' or 'rejected' (by V8). */
const report = new Map();
const toWrite = [];
/** A cache file larger than this is not read (the sendmail command's largest is some 300 KB). */
const MAX_BYTES = 16 * 1024 * 1024;
/** A chunk with an import() (the loader of hook modules named by the configuration) is left to Node:
 * a script compiled here can reach Node's own loader for it only through an option that Node 20 calls
 * experimental, and warns about on standard error, or not at all before Node 20.12. */
const DYNAMIC_IMPORT = 'import(';
/** The wrapper's text before the chunk's own: stack traces count the chunk's first line's columns
 * from the chunk's start, as for a chunk Node compiled. */
const COLUMN_OFFSET = -Module.wrap('\0').indexOf('\0');

/**
 * A cache file: a first line `ferrymail-code-cache <bytes>`, then the chunk's source it was made from
 * (that many bytes), then V8's data. The source is compared whole, as bytes are compared (a fraction of
 * a millisecond for the sendmail command's chunks): a size and a time would miss an edit of the same
 * length, and every copy or package install changes the times. V8 checks only the source's length.
 */
const MAGIC = 'ferrymail-code-cache ';

/** A cache file's bytes when it may be trusted as the chunk is, else why not. */
function readTrusted(filename) {
  let fd;
  try {
    fd = fs.openSync(filename + SUFFIX, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch {
    return { why: 'none' };
  }
  try {
    const st = fs.fstatSync(fd);
    const owner = fs.statSync(filename).uid;
    if (!st.isFile() || (st.uid !== owner && st.uid !== 0) || st.mode & 0o022 || st.size > MAX_BYTES)
      return { why: 'untrusted' };
    const raw = Buffer.allocUnsafe(st.size);
    let got = 0;
    for (let n = 1; got < raw.length && n > 0; got += n) n = fs.readSync(fd, raw, got, raw.length - got, got);
    return { raw: raw.subarray(0, got) };
  } finally {
    fs.closeSync(fd);
  }
}

/** The cached data for a chunk whose source is `content`, or why there is none. */
function cacheFor(filename, content) {
  const { raw, why } = readTrusted(filename);
  if (!raw) return { why };
  const end = raw.indexOf(10);
  const count =
    end > 0 && raw.toString('latin1', 0, end).startsWith(MAGIC) ? raw.toString('latin1', MAGIC.length, end) : '';
  const bytes = /^\d{1,9}$/.test(count) ? Number(count) : Number.NaN;
  const from = end + 1;
  if (
    !Number.isSafeInteger(bytes) ||
    from + bytes > raw.length ||
    !raw.subarray(from, from + bytes).equals(Buffer.from(content, 'utf8'))
  )
    return { why: 'stale' };
  return { data: raw.subarray(from + bytes) };
}

/** The real path of dist/bundle/ beside this file, with a trailing separator; '' when there is none. */
function bundleDir() {
  try {
    return fs.realpathSync(path.join(__dirname, '..', 'dist', 'bundle')) + path.sep;
  } catch {
    return '';
  }
}

/** Writes a chunk's cache beside it, when the chunk is this user's own: through a new file renamed into
 * place, never through a name that is already there (a link planted there is replaced, not followed). */
function writeCache(filename, content, data) {
  if (fs.statSync(filename).uid !== process.geteuid()) return;
  const source = Buffer.from(content, 'utf8');
  const tmp = `${filename}${SUFFIX}.${process.pid}.tmp`;
  let made = false;
  try {
    const fd = fs.openSync(tmp, 'wx', 0o644);
    made = true;
    try {
      fs.writeFileSync(fd, Buffer.concat([Buffer.from(`${MAGIC}${source.length}\n`, 'latin1'), source, data]));
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, filename + SUFFIX);
  } catch {
    // only a file this process made is removed: a name someone else put there stays as it is
    if (made) fs.rmSync(tmp, { force: true });
  }
}

const compile = Module.prototype._compile;
Module.prototype._compile = function compileCached(content, filename) {
  if (!BUNDLE || !filename.startsWith(BUNDLE) || !filename.endsWith('.cjs') || content.includes(DYNAMIC_IMPORT))
    return compile.call(this, content, filename);
  let cache;
  try {
    cache = cacheFor(filename, content);
  } catch {
    return compile.call(this, content, filename);
  }
  const script = new vm.Script(Module.wrap(content), {
    filename,
    cachedData: cache.data,
    columnOffset: COLUMN_OFFSET,
  });
  const outcome = cache.data ? (script.cachedDataRejected ? 'rejected' : 'used') : cache.why;
  report.set(path.relative(BUNDLE, filename), outcome);
  if (writing && outcome !== 'used') toWrite.push([script, filename, content]);
  const wrapper = script.runInThisContext({ displayErrors: true });
  // the require a chunk sees: the same loading and resolution as Node's own for this module
  const require = (id) => this.require(id);
  require.resolve = (request, options) => Module._resolveFilename(request, this, false, options);
  require.resolve.paths = (request) => Module._resolveLookupPaths(request, this);
  require.cache = Module._cache;
  require.extensions = Module._extensions;
  require.main = mainModule;
  return wrapper.call(this.exports, this.exports, require, this, filename, path.dirname(filename));
};

if (writing) {
  // at exit, so that the cache holds every function the run compiled, not only the chunk's top level
  process.on('exit', () => {
    for (const [script, filename, content] of toWrite) {
      try {
        writeCache(filename, content, script.createCachedData());
      } catch {
        // a cache that cannot be written is one the next run does without
      }
    }
  });
}

/** What happened to each chunk compiled so far (for the tests). */
module.exports = { codeCacheReport: () => Object.fromEntries(report) };
