// A producer worker for producers.spec: attaches to a kernel's shared input and sends
// `count` numbered messages in batches. With `hold`, it then sends `holdCount` more
// (numbered on from `count`) through a producer that stalls on its first claim — after claiming
// or after writing — and says so ({ holding: true }): for good (the test terminates the worker
// there: a producer that dies mid-claim), or for `hold.ms` (a producer that was only stalled),
// or, with `untilRescued`, until another producer rescued its claim (at most `hold.ms`): a
// stall past recoverAfterMs whatever the machine's load.
import { parentPort, workerData } from 'node:worker_threads'

import { RingProducer, type ProducerHandle } from '../index'
import { sharedInputStats } from '../ts/producer'

interface Job {
  handle: ProducerHandle
  producer: number
  count: number
  batch: number
  recoverAfterMs?: number
  hold?: { at: 'claimed' | 'written'; ms?: number; count: number; untilRescued?: boolean }
}

const { handle, producer, count, batch, recoverAfterMs, hold } = workerData as Job

async function send(p: RingProducer<{ producer: number; seq: number }>, from: number, n: number): Promise<void> {
  const msgs: { producer: number; seq: number }[] = []
  for (let s = 0; s < n; s += batch) {
    msgs.length = 0
    for (let i = 0; i < Math.min(batch, n - s); i++) msgs.push({ producer, seq: from + s + i })
    await p.sendBatch(msgs)
  }
}

async function main(): Promise<void> {
  const p = new RingProducer<{ producer: number; seq: number }>(handle, { recoverAfterMs })
  await send(p, 0, count)
  let sent = p.sent
  if (hold) {
    const then = () => parentPort!.postMessage({ holding: true, sent })
    const until = hold.untilRescued ? () => sharedInputStats(handle.claim, 0, handle.state).rescuedClaims > 0 : undefined
    const options = { recoverAfterMs, testHold: { at: hold.at, ms: hold.ms, then, until } }
    const q = new RingProducer<{ producer: number; seq: number }>(handle, options)
    await send(q, count, hold.count)
    sent += q.sent
  }
  parentPort!.postMessage({ sent })
}

main().catch((e: Error) => parentPort!.postMessage({ error: `${(e as { code?: string }).code ?? ''} ${e.message}` }))
