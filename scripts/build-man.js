// Builds the manual pages from the docs at build time: ferrymail(8) from docs/cli.md, ferrymail-sendmail(8)
// from docs/sendmail.md, ferrymail.yaml(5) from docs/configuration.md and ferrymail-routes(5) from
// docs/routes.md, into dist/man. The docs stay the one source; this turns their Markdown (headings,
// paragraphs, lists, code blocks, tables, inline code, emphasis, links) into man(7) requests.
//
// Usage: node scripts/build-man.js [OUTDIR]
import fs from 'node:fs';
import path from 'node:path';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');

/** The pages: name, section, source, one line for NAME, and the pages to see also. */
export const PAGES = [
  {
    name: 'ferrymail',
    section: 8,
    source: 'docs/cli.md',
    what: 'offline-aware mail relay: the daemon and its administration',
    see: ['ferrymail-sendmail(8)', 'ferrymail.yaml(5)', 'ferrymail-routes(5)'],
  },
  {
    name: 'ferrymail-sendmail',
    section: 8,
    source: 'docs/sendmail.md',
    what: 'the sendmail, mailq, runq, mailrm, newaliases and qmail-inject commands of ferrymail',
    see: ['ferrymail(8)', 'ferrymail.yaml(5)'],
  },
  {
    name: 'ferrymail.yaml',
    section: 5,
    source: 'docs/configuration.md',
    what: 'the configuration file of ferrymail',
    see: ['ferrymail(8)', 'ferrymail-routes(5)'],
  },
  {
    name: 'ferrymail-routes',
    section: 5,
    source: 'docs/routes.md',
    what: 'the route files of ferrymail: which way out mail takes on which network',
    see: ['ferrymail(8)', 'ferrymail.yaml(5)'],
  },
];

/** Escapes text for roff: backslashes, and a leading dot or apostrophe. */
function esc(s) {
  return s.replace(/\\/g, '\\e').replace(/-/g, '\\-');
}

/** Inline Markdown to roff: code, bold, emphasis, links (their text; other pages by name). */
export function inline(s) {
  const parts = [];
  // code spans first: their content is literal
  const re = /`([^`]+)`/g;
  let last = 0;
  for (let m = re.exec(s); m; m = re.exec(s)) {
    parts.push(prose(s.slice(last, m.index)));
    parts.push(`\\fB${esc(m[1])}\\fR`);
    last = m.index + m[0].length;
  }
  parts.push(prose(s.slice(last)));
  return parts.join('');
}

/** Prose outside code spans. */
function prose(s) {
  return esc(s)
    .replace(/\[([^\]]+)\]\(([^)]+)\)/g, (_m, text, href) => {
      const page = /^([a-z-]+)\.md/.exec(href);
      const to = page ? PAGES.find((p) => p.source === `docs/${page[1]}.md`) : undefined;
      return to && text !== `${page[1]}.md`
        ? `${text} (${to.name}(${to.section}))`
        : to
          ? `${to.name}(${to.section})`
          : text;
    })
    .replace(/\*\*([^*]+)\*\*/g, '\\fB$1\\fR')
    .replace(/(^|[^\w*])\*([^*\s][^*]*)\*/g, '$1\\fI$2\\fR');
}

/** A line that roff would take as a request gets a zero-width start. */
function line(s) {
  return /^[.']/.test(s) ? `\\&${s}` : s;
}

/** The cells of a table row. */
function cells(row) {
  return row
    .trim()
    .replace(/^\||\|$/g, '')
    .split(/(?<!\\)\|/)
    .map((c) => c.trim().replace(/\\\|/g, '|'));
}

/** Converts one Markdown document (its first heading dropped) to the body of a man page. */
export function toRoff(md) {
  const out = [];
  const lines = md.replace(/\r\n/g, '\n').split('\n');
  let i = 0;
  let para = [];
  const flush = () => {
    if (para.length) out.push('.PP', ...para.map((l) => line(inline(l))));
    para = [];
  };
  if (/^# /.test(lines[0] ?? '')) i = 1;
  while (i < lines.length) {
    const l = lines[i];
    const fence = /^(\s*)```/.exec(l);
    if (fence) {
      flush();
      const code = [];
      const indent = fence[1].length;
      for (i++; i < lines.length && !/^\s*```/.test(lines[i]); i++) code.push(lines[i].slice(indent));
      out.push('.PP', '.RS 4', '.nf', ...code.map((c) => line(esc(c))), '.fi', '.RE');
      i++;
      continue;
    }
    const h = /^(#{2,4}) (.*)$/.exec(l);
    if (h) {
      flush();
      // a heading is plain text: the section request sets its font
      const plain = esc(h[2].replace(/`/g, '').replace(/\[([^\]]+)\]\([^)]+\)/g, '$1')).replace(/"/g, '');
      out.push(h[1].length === 2 ? `.SH "${plain.toUpperCase()}"` : `.SS "${plain}"`);
      i++;
      continue;
    }
    if (/^\|/.test(l)) {
      flush();
      const head = cells(l);
      i++;
      if (/^\|[\s:|-]+\|?$/.test(lines[i] ?? '')) i++;
      for (; i < lines.length && /^\|/.test(lines[i]); i++) {
        const c = cells(lines[i]);
        const rest = c
          .slice(1)
          .map((v, k) => (v && v !== '—' && v !== '-' ? (k === c.length - 2 ? v : `${head[k + 1]}: ${v}`) : ''))
          .filter(Boolean);
        out.push('.TP', line(inline(c[0] ?? '')), ...rest.map((r) => line(inline(r))));
      }
      continue;
    }
    const item = /^(\s*)([-*]|\d+\.) (.*)$/.exec(l);
    if (item) {
      flush();
      const text = [item[3]];
      for (i++; i < lines.length && /^\s{2,}\S/.test(lines[i]) && !/^\s*([-*]|\d+\.) |^\s*```/.test(lines[i]); i++)
        text.push(lines[i].trim());
      const indent = item[1].length >= 2 ? 6 : 2;
      out.push(`.IP ${/\d/.test(item[2]) ? item[2] : '\\(bu'} ${indent}`, ...text.map((t) => line(inline(t))));
      continue;
    }
    if (!l.trim()) {
      flush();
      i++;
      continue;
    }
    para.push(l.trim());
    i++;
  }
  flush();
  return out.join('\n');
}

/** The whole page. */
export function page(p, md, version, date) {
  const name = p.name.replace(/-/g, '\\-');
  return [
    `.TH "${p.name.toUpperCase()}" "${p.section}" "${date}" "ferrymail ${version}" "ferrymail"`,
    '.SH NAME',
    `${name} \\- ${esc(p.what)}`,
    toRoff(md),
    '.SH "SEE ALSO"',
    p.see.map((s) => `.BR ${s.replace(/\((\d)\)$/, ' ($1)')}`).join(',\n'),
    '',
  ].join('\n');
}

/** Writes every page into outDir. */
export function buildMan(outDir = path.join(ROOT, 'dist', 'man')) {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  fs.mkdirSync(outDir, { recursive: true });
  for (const p of PAGES) {
    const src = path.join(ROOT, p.source);
    const date = fs.statSync(src).mtime.toISOString().slice(0, 10);
    fs.writeFileSync(
      path.join(outDir, `${p.name}.${p.section}`),
      page(p, fs.readFileSync(src, 'utf8'), pkg.version, date),
    );
  }
}

if (import.meta.url === `file://${process.argv[1]}`) buildMan(process.argv[2]);
