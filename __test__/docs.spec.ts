import test from 'ava'
import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)
const root = join(__dirname, '..')
const read = (p: string) => readFileSync(join(root, p), 'utf8')

function snippetOf(source: string): string {
  const start = source.indexOf('// snippet-start\n')
  const end = source.indexOf('// snippet-end')
  if (start < 0 || end < 0) throw new Error('snippet markers missing')
  return source.slice(start + '// snippet-start\n'.length, end).trimEnd()
}

test('every name the package exports has a usage example in its documentation (typedoc shows it)', (t) => {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const ts = require('typescript') as typeof import('typescript')
  const entry = join(root, 'index.ts')
  const program = ts.createProgram([entry], { strict: true, target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS })
  const checker = program.getTypeChecker()
  const exported = checker.getExportsOfModule(checker.getSymbolAtLocation(program.getSourceFile(entry)!)!)
  t.true(exported.length > 40)
  const missing = exported.filter((sym) => {
    const target = sym.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(sym) : sym
    return !target.getJsDocTags(checker).some((tag) => tag.name === 'example')
  })
  t.deepEqual(missing.map((s) => s.name), [])
})

/** A snippet cut from inside a function, as the README shows it: the common indentation removed. */
function dedent(code: string): string {
  const lines = code.split('\n')
  const indent = Math.min(...lines.filter((l) => l.trim()).map((l) => /^ */.exec(l)![0].length))
  return lines.map((l) => l.slice(indent)).join('\n')
}

/** Every `<!-- snippet: path -->` block of the README: the file it names and the code it shows. */
function readmeSnippets(): { file: string; code: string }[] {
  const readme = read('README.md')
  return [...readme.matchAll(/<!-- snippet: (\S+) -->\n```\w*\n([\s\S]*?)\n```/g)].map((m) => ({ file: m[1]!, code: m[2]! }))
}

test('README quick start is the tested example, verbatim', (t) => {
  const snippets = readmeSnippets()
  const quickstart = snippets.find((s) => s.file === 'examples/quickstart.ts')
  t.truthy(quickstart, 'README lacks the quickstart snippet block')
  t.is(quickstart!.code, snippetOf(read('examples/quickstart.ts')))
})

test('every README snippet block is its example file, verbatim (ESM and CommonJS included)', (t) => {
  const files = readmeSnippets().map((s) => s.file)
  for (const f of ['examples/quickstart.mjs', 'examples/quickstart.cjs', 'examples/quickstart.ts']) t.true(files.includes(f), `README shows ${f}`)
  for (const { file, code } of readmeSnippets()) t.is(code, dedent(snippetOf(read(file))), file)
})

test('README is for users first: what it is, install, platforms, ESM and CJS, then the rest, contributors last', (t) => {
  const readme = read('README.md')
  const at = (needle: string) => {
    const i = readme.indexOf(needle)
    t.true(i >= 0, `README has ${JSON.stringify(needle)}`)
    return i
  }
  const order = [
    at('**persistent ring kernel**'),
    at('npm install ringbridge'),
    at('## Supported platforms'),
    at('<!-- snippet: examples/quickstart.mjs -->'),
    at('<!-- snippet: examples/quickstart.cjs -->'),
    at('## Quick start (TypeScript)'),
    at('## Performance'),
    at('## Contributing'),
  ]
  t.deepEqual(order, [...order].sort((a, b) => a - b))
  // The contributor commands live in the contributor section.
  const contributing = readme.slice(at('## Contributing'))
  for (const cmd of ['npm install', 'npm start', 'npm test']) t.true(contributing.includes(cmd), cmd)
  // The platform table names what the brief promises.
  for (const s of ['Linux x64, glibc', 'Linux arm64, glibc', 'driver ≥ 580', 'CUDA 13.0']) at(s)
})

for (const [file, expected] of [
  ['examples/quickstart.mjs', ['[ 12, 24, 36, 48 ]']],
  ['examples/quickstart.cjs', ['{ key: 7, n: 1 }']],
] as const) {
  test(`README's ${file} runs (importing 'ringbridge' by name) and prints what the README says`, async (t) => {
    const { stdout, stderr } = await run(process.execPath, [join(root, file)], { timeout: 30_000 })
    t.deepEqual(stdout.trim().split('\n'), [...expected])
    t.is(stderr, '')
    for (const line of expected) t.true(read(file).includes(`// ${line}`), `${file} documents ${line}`)
  })
}

test('quick start runs and prints what the README says', async (t) => {
  const { stdout } = await run(process.execPath, [join(root, 'examples/quickstart.js')], { timeout: 30_000 })
  t.deepEqual(stdout.trim().split('\n'), ['[ 12, 24, 36, 48 ]', '[ 1, 2, 3, 4 ]', "{ mode: 'drain', processed: 2, undelivered: [] }"])
})

test('npm start demo checks every reply and reports figures', async (t) => {
  const { stdout } = await run(process.execPath, [join(root, 'examples/demo.js')], { timeout: 120_000 })
  t.regex(stdout, /streamed 100000 messages, all replies checked in order/)
  t.regex(stdout, /throughput\s+[\d.]+ M msg\/s/)
  t.regex(stdout, /await request p99 [\d.]+ µs/)
  t.regex(stdout, /undelivered 0, errors 0/)
})

test('README lists the commands that exist', (t) => {
  const readme = read('README.md')
  const scripts = JSON.parse(read('package.json')).scripts as Record<string, string>
  for (const cmd of ['npm install', 'npm start', 'npm test']) t.true(readme.includes(cmd), cmd)
  for (const s of ['start', 'test', 'build', 'bench', 'docs']) t.truthy(scripts[s], `script ${s}`)
})
