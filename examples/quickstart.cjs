// The README's CommonJS example, verbatim between the markers (__test__/docs.spec.ts checks it
// and runs this file; __test__/exports.spec.ts runs it again from an installed, packed copy).
// snippet-start
const { Runtime, struct, u32 } = require('ringbridge')

async function main() {
  const runtime = await Runtime.open({ backend: 'cpu' }) // the CPU backend: no GPU needed
  const Pair = struct({ key: u32, n: u32 })
  const kernel = await runtime.launch({ handler: 'echo', input: Pair, output: Pair })

  console.log(await kernel.request({ key: 7, n: 1 })) // { key: 7, n: 1 }

  await kernel.terminate()
  await runtime.close()
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
// snippet-end
