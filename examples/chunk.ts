// Zero-copy streaming with chunks (PROTOCOL.md §5.3): reserve free input slots, write payloads
// straight into the ring's memory, commit them with one publish; read replies in place and
// release their slots with one store. No per-message allocation, copy or call; after the first
// lap of equal-sized messages not even a header write. The README's chunk section is cut from
// this file between the snippet markers.
//   npm run example -- examples/chunk
import { Runtime, bytes } from '../index'

const TOTAL = 1_000_000

async function main() {
  const runtime = await Runtime.open({ backend: 'auto' }) // GPU when present, CPU backend otherwise
  // snippet-start
  const kernel = await runtime.launch({ handler: 'echo', input: bytes(), output: bytes(), capacity: 4096, slotSize: 64 })
  let sent = 0
  let received = 0
  let wrong = 0
  while (received < TOTAL) {
    // Up to 1024 free slots; fill each payload (byte 16 of its slot) in place, then one commit.
    // With every message sent answered there is no reply to wait for, only room: nextReserve.
    const want = Math.min(1024, TOTAL - sent)
    const chunk = sent === received ? await kernel.nextReserve(want, { timeoutMs: 10_000 }) : kernel.reserve(want)
    const out = new DataView(chunk.first.buffer)
    for (let i = 0; i < chunk.count; i++) {
      const at = i < chunk.firstCount ? chunk.first.byteOffset + i * chunk.slotSize : chunk.second.byteOffset + (i - chunk.firstCount) * chunk.slotSize
      out.setUint32(at + chunk.payloadOffset, sent + i, true)
    }
    sent += chunk.commit(chunk.count, { size: 4 })

    // The replies ready now (or wait for one), read where the kernel wrote them, then released.
    let replies = kernel.receiveChunk(4096)
    if (replies.count === 0) replies = await kernel.nextChunk(4096, { timeoutMs: 10_000 })
    const view = new DataView(replies.first.buffer)
    for (let i = 0; i < replies.count; i++, received++) {
      const at = i < replies.firstCount ? replies.first.byteOffset + i * replies.slotSize : replies.second.byteOffset + (i - replies.firstCount) * replies.slotSize
      if (replies.lengthAt(i) !== 4 || view.getUint32(at + replies.payloadOffset, true) !== received) wrong++
    }
    replies.release()
  }
  // snippet-end
  console.log(`streamed ${received} messages through chunks on ${kernel.backend}; wrong replies: ${wrong}`)
  await kernel.terminate()
  await runtime.close()
}

main().catch((err) => {
  console.error(err)
  process.exitCode = 1
})
