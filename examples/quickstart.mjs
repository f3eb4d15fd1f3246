// The README's ESM example, verbatim between the markers (__test__/docs.spec.ts checks it and
// runs this file; __test__/exports.spec.ts runs it again from an installed, packed copy).
// snippet-start
import { Runtime, array, f32, struct } from 'ringbridge'

const runtime = await Runtime.open() // GPU when present, CPU backend otherwise
const Saxpy = struct({ a: f32, x: array(f32, 4), y: array(f32, 4) })
const kernel = await runtime.launch({ handler: 'saxpy', input: Saxpy, output: array(f32, 4) })

console.log(await kernel.request({ a: 2, x: [1, 2, 3, 4], y: [10, 20, 30, 40] })) // [ 12, 24, 36, 48 ]

await kernel.terminate()
await runtime.close()
// snippet-end
