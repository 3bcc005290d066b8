// Compiles the bundle's chunks with V8's code cache: the bytecode of each chunk's functions, saved by the
// build (scripts/code-cache.js) after a run of the commands, is loaded with the chunk's source instead of
// compiling it again. Node 20 has no compile cache of its own for user code (it came in Node 22), and
// parsing and compiling the chunks was about a third of what the sendmail command costs above Node's start.
//
// Trusts the files beside the chunks no more than the chunks themselves (both are the installation's
// own). A cache is used only for the very source it was made from, so a chunk rebuilt or edited by
// hand is compiled from its source; V8 itself refuses a cache made by another version of V8 or under
// other flags. Any failure to read a cache compiles the chunk as
// Node would: the cache can make a start faster, never break it.
//
// FERRYMAIL_CODE_CACHE=write makes the process write, at its exit, a cache for each chunk it compiled
// without one (the build sets it; nothing else should).
'use strict';
const fs = require('node:fs');
const Module = require('node:module');
const path = require('node:path');
const vm = require('node:vm');

const mainModule = require.main;
const BUNDLE = path.join(__dirname, '..', 'dist', 'bundle') + path.sep;
const SUFFIX = '.v8cache';
const writing = process.env.FERRYMAIL_CODE_CACHE === 'write';
/** What happened to each chunk compiled here: 'used', 'none', 'stale' or 'rejected' (by V8). */
const report = new Map();
const toWrite = [];

/**
 * A cache file: a first line `ferrymail-code-cache <bytes>`, then the chunk's source it was made from
 * (that many bytes), then V8's data. The source is compared whole, as bytes are compared (a fraction of
 * a millisecond for the sendmail command's chunks): a size and a time would miss an edit of the same
 * length, and every copy or package install changes the times. V8 checks only the source's length.
 */
const MAGIC = 'ferrymail-code-cache ';

/** The cached data for a chunk whose source is `content`, or why there is none. */
function cacheFor(filename, content) {
  let raw;
  try {
    raw = fs.readFileSync(filename + SUFFIX);
  } catch {
    return { why: 'none' };
  }
  const end = raw.indexOf(10);
  const bytes =
    end > 0 && raw.toString('latin1', 0, end).startsWith(MAGIC)
      ? Number(raw.toString('latin1', MAGIC.length, end))
      : NaN;
  const from = end + 1;
  if (
    !Number.isSafeInteger(bytes) ||
    from + bytes > raw.length ||
    !raw.subarray(from, from + bytes).equals(Buffer.from(content, 'utf8'))
  )
    return { why: 'stale' };
  return { data: raw.subarray(from + bytes) };
}

/** The cache file's content for a chunk's source and V8's data. */
function cacheFile(content, data) {
  const source = Buffer.from(content, 'utf8');
  return Buffer.concat([Buffer.from(`${MAGIC}${source.length}\n`, 'latin1'), source, data]);
}

const compile = Module.prototype._compile;
Module.prototype._compile = function compileCached(content, filename) {
  if (!filename.startsWith(BUNDLE) || !filename.endsWith('.cjs')) return compile.call(this, content, filename);
  let cache;
  try {
    cache = cacheFor(filename, content);
  } catch {
    return compile.call(this, content, filename);
  }
  const script = new vm.Script(Module.wrap(content), { filename, cachedData: cache.data });
  const outcome = cache.data ? (script.cachedDataRejected ? 'rejected' : 'used') : cache.why;
  report.set(path.relative(BUNDLE, filename), outcome);
  if (writing && outcome !== 'used') toWrite.push([script, filename, content]);
  const wrapper = script.runInThisContext({ displayErrors: true });
  // the require a chunk sees: the same loading and resolution as Node's own for this module
  const require = (id) => this.require(id);
  require.resolve = (request, options) => Module._resolveFilename(request, this, false, options);
  require.cache = Module._cache;
  require.main = mainModule;
  return wrapper.call(this.exports, this.exports, require, this, filename, path.dirname(filename));
};

if (writing) {
  // at exit, so that the cache holds every function the run compiled, not only the chunk's top level
  process.on('exit', () => {
    for (const [script, filename, content] of toWrite)
      fs.writeFileSync(filename + SUFFIX, cacheFile(content, script.createCachedData()));
  });
}

/** What happened to each chunk compiled so far (for the tests). */
module.exports = { codeCacheReport: () => Object.fromEntries(report) };
