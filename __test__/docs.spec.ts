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

test('README quick start is the tested example, verbatim', (t) => {
  const readme = read('README.md')
  const block = /<!-- snippet: examples\/quickstart\.ts -->\n```ts\n([\s\S]*?)\n```/.exec(readme)
  t.truthy(block, 'README lacks the quickstart snippet block')
  t.is(block![1], snippetOf(read('examples/quickstart.ts')))
})

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
