// A producer worker for producers.spec: attaches to a kernel's shared input and sends
// `count` numbered messages in batches.
import { parentPort, workerData } from 'node:worker_threads'

import { RingProducer, type ProducerHandle } from '../index'

const { handle, producer, count, batch } = workerData as { handle: ProducerHandle; producer: number; count: number; batch: number }
const p = new RingProducer<{ producer: number; seq: number }>(handle)

async function main(): Promise<void> {
  const msgs: { producer: number; seq: number }[] = []
  for (let s = 0; s < count; s += batch) {
    msgs.length = 0
    for (let i = 0; i < Math.min(batch, count - s); i++) msgs.push({ producer, seq: s + i })
    await p.sendBatch(msgs)
  }
  parentPort!.postMessage({ sent: p.sent })
}

main().catch((e: Error) => parentPort!.postMessage({ error: `${(e as { code?: string }).code ?? ''} ${e.message}` }))
