/**
 * `node bench/codec.js`: a 3-field struct's generated codec (issue #12 goal 3: no per-field loop,
 * no string per field per message) beside a hand-written DataView encoder and decoder of the
 * same layout — the floor a codec can reach — in the same process. One `name value unit` line
 * per figure, the ratios last.
 */
import { performance } from 'node:perf_hooks'
import { f32, f64, struct, u32 } from '../index'

const Msg = struct({ id: u32, x: f32, y: f64 })
const N = 1 << 20
const ROUNDS = 7

/** Messages per second of `run` over N messages: the best of ROUNDS (the first warms up). */
function rate(run: () => number): number {
  let best = 0
  for (let r = 0; r < ROUNDS; r++) {
    const t = performance.now()
    const check = run()
    const s = N / ((performance.now() - t) / 1000)
    if (check !== N) throw new Error(`a round touched ${check} messages, not ${N}`)
    if (r > 0) best = Math.max(best, s)
  }
  return best
}

function main(): void {
  const size = Msg.size
  const view = new DataView(new ArrayBuffer(N * size))
  const msgs = Array.from({ length: N }, (_, i) => ({ id: i, x: i * 0.5, y: i * 0.25 }))
  const [id, x, y] = Msg.layout.map((l) => l.offset) as [number, number, number]
  const encode = rate(() => {
    for (let i = 0; i < N; i++) Msg.encode(view, i * size, msgs[i]!, size)
    return N
  })
  const handEncode = rate(() => {
    for (let i = 0; i < N; i++) {
      const m = msgs[i]!
      const o = i * size
      view.setUint32(o + id, m.id, true)
      view.setFloat32(o + x, m.x, true)
      view.setFloat64(o + y, m.y, true)
    }
    return N
  })
  let sum = 0
  const decode = rate(() => {
    let n = 0
    for (let i = 0; i < N; i++) {
      sum += Msg.decode(view, i * size, size).id
      n++
    }
    return n
  })
  const handDecode = rate(() => {
    let n = 0
    for (let i = 0; i < N; i++) {
      const o = i * size
      const m = { id: view.getUint32(o + id, true), x: view.getFloat32(o + x, true), y: view.getFloat64(o + y, true) }
      sum += m.id
      n++
    }
    return n
  })
  const m = (v: number) => `${(v / 1e6).toFixed(1)} M msg/s`
  console.log(`codec_struct3_encode ${m(encode)}`)
  console.log(`codec_struct3_encode_handwritten ${m(handEncode)}`)
  console.log(`codec_struct3_decode ${m(decode)}`)
  console.log(`codec_struct3_decode_handwritten ${m(handDecode)}`)
  console.log(`ratio_encode_vs_handwritten ${(encode / handEncode).toFixed(2)}x`)
  console.log(`ratio_decode_vs_handwritten ${(decode / handDecode).toFixed(2)}x`)
  if (sum < 0) console.log(sum)
}

main()
