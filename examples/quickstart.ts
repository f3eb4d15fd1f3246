// The README's quick start is cut from this file between the snippet markers; docs.spec.ts runs
// it and checks that the README still matches.
// snippet-start
import { Runtime, array, f32, struct } from '../index'

async function main() {
  const runtime = await Runtime.open({ backend: 'auto' }) // GPU when present, CPU backend otherwise
  const Saxpy = struct({ a: f32, x: array(f32, 4), y: array(f32, 4) })
  const kernel = await runtime.launch({ handler: 'saxpy', input: Saxpy, output: array(f32, 4) })

  const r = await kernel.request({ a: 2, x: [1, 2, 3, 4], y: [10, 20, 30, 40] })
  console.log(r) // [ 12, 24, 36, 48 ]

  await kernel.send({ a: 1, x: [1, 1, 1, 1], y: [0, 1, 2, 3] })
  console.log(await kernel.receive()) // [ 1, 2, 3, 4 ]

  console.log(await kernel.terminate()) // { mode: 'drain', processed: 2, undelivered: [] }
  await runtime.close()
}
// snippet-end

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
