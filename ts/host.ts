/**
 * The host steps of the ring protocol (docs/PROTOCOL.md §5.2, §8, §9) in JavaScript: the twin
 * of `crates/ringbridge-core/src/host.rs`, to be read beside it. Each step carries the same
 * `ORDERING:` tag as its Rust counterpart:
 *
 * - **H3** {@link Host.publish}: publish `input_tail` (P4), once per batch.
 * - **H4 / D2** {@link Host.wakeKernel}: after an index store, wake a kernel that announced sleep.
 * - **H5** {@link Host.terminateStages}: the terminate command, stage by stage along a route.
 * - **H6** {@link Host.release}: release `output_head` (C4), then D2.
 * - **H7** {@link Host.announce}: store the `host_waiting` bits, then re-check before waiting
 *   for the doorbell ({@link Host.pump}).
 *
 * H1 is `launch.ts` (and the native side), H2 the rings' `stage` (`ring.ts`). `Atomics.load` and
 * `Atomics.store` are sequentially consistent, which covers the release, acquire and SeqCst
 * fences the Rust host writes out (the spec's §5.2 table).
 *
 * The event loop's step ({@link Host.pump}) drives the two queues around the rings: the outbox
 * (`outbox.ts`: send queue → input ring) and the inbox (`inbox.ts`: output ring → requests,
 * receivers, reply queue).
 * @internal
 * @module
 */
import { RingbridgeError } from './errors'
import type { Inbox } from './inbox'
import type { Outbox } from './outbox'
import { STATE, STATE_NAMES, TERMINATE, WAIT } from './protocol'
import type { ControlBlockView, InputRing, OutputRing } from './ring'
import type { KernelState, TerminateMode } from './types'
import { bound, settleWaiter, type Waiter } from './wait'

/** Each state's name by its `state` word (the union is checked against it by protocol.spec). */
const STATES = STATE_NAMES as readonly KernelState[]

/** What runs the kernel: wakes it (D2) and joins it. The native kernel, or a JS handler's worker. */
export interface Runner {
  wake(): void
  join(): void
  joinAsync(): Promise<void>
}

/** A life-cycle wait: settles once `until()` holds. */
type StateWaiter = Waiter<void> & { until: () => boolean }

/** The host end of one kernel (or a route: it feeds the first stage and drains the last). */
export class Host {
  /** Every stage's control block, first to last (one for a single kernel). */
  readonly cbs: readonly ControlBlockView[]
  /** The input side's control block (a route's first stage). */
  readonly cb: ControlBlockView
  /** The output side's control block (a route's last stage; else `cb`). */
  readonly outCb: ControlBlockView
  readonly runner: Runner
  readonly #in: InputRing
  readonly #out: OutputRing
  readonly #sleepingIdx: number
  readonly #waitingIdx: number
  readonly #timeoutMs: number
  readonly #stateWaiters: StateWaiter[] = []
  /** What the kernel ending by itself (a fault) does: the facade finishes it. */
  readonly #onFault: () => void
  #inbox!: Inbox<unknown>
  #outbox!: Outbox<unknown>
  /** The `host_waiting` bits stored last (H7). */
  #waiting = 0
  #keepAlive: ReturnType<typeof setInterval> | undefined
  #pumping = false
  /** Terminate was asked for (or the kernel faulted): sends are refused, replies still drain. */
  terminating = false
  /** The kernel is joined and every waiter settled. */
  closed = false

  constructor(cbs: readonly ControlBlockView[], runner: Runner, rings: { input: InputRing; output: OutputRing }, timeoutMs: number, onFault: () => void) {
    this.cbs = cbs
    this.cb = cbs[0]!
    this.outCb = cbs[cbs.length - 1]!
    this.runner = runner
    this.#in = rings.input
    this.#out = rings.output
    this.#sleepingIdx = this.cb.index32('kernel_sleeping')
    this.#waitingIdx = this.cb.index32('host_waiting')
    this.#timeoutMs = timeoutMs
    this.#onFault = onFault
  }

  /** Hands the host the queues its pump drives (they are built over this host). */
  attach(inbox: Inbox<any>, outbox: Outbox<any>): void {
    this.#inbox = inbox
    this.#outbox = outbox
  }

  /** Life-cycle state: a route is terminated once any stage is (a faulted stage ends it), else in its first stage's state. */
  state(): KernelState {
    for (const cb of this.cbs) if (cb.load32('state') === STATE.terminated) return 'terminated'
    return STATES[this.cb.load32('state')] ?? 'launching'
  }

  /** Each stage's state, first to last. */
  stageState(cb: ControlBlockView): KernelState {
    return STATES[cb.load32('state')] ?? 'launching'
  }

  /** H3 then H4: publish the staged frames, wake the kernel if it announced sleep. Returns how many it published. */
  publish(): number {
    const n = this.#in.staged
    // ORDERING: (H3) one seq_cst store of input_tail for the whole batch (P4, `InputRing.publish`):
    // the frames staged before it (H2, plain stores) are visible to a kernel that loads the tail.
    if (!this.#in.publish()) return 0
    this.wakeKernel()
    return n
  }

  /** H6: hand consumed output slots back, then D2. */
  release(): void {
    // ORDERING: (H6) one seq_cst store of output_head (C4, `OutputRing.release`) after every
    // payload was read; then D2, as after H3.
    if (this.#out.release()) this.wakeKernel()
  }

  /** H4 / D2: wakes a kernel that announced sleep (D1). A route: we feed its first stage and drain its last; the runner wakes them all. */
  wakeKernel(): void {
    // ORDERING: (D2) our Atomics.store of the index is seq_cst, so this load of kernel_sleeping
    // cannot pass it; pairs with the kernel's SeqCst store of kernel_sleeping and re-check (D1).
    if (Atomics.load(this.cb.u32, this.#sleepingIdx) !== 0 || (this.outCb !== this.cb && Atomics.load(this.outCb.u32, this.#sleepingIdx) !== 0)) this.runner.wake()
  }

  /** Sets every stage's `active` word (1: dispatch; 0: pause) and wakes the runner. */
  setActive(active: boolean): void {
    for (const cb of this.cbs) cb.store32('active', active ? 1 : 0)
    this.runner.wake()
  }

  /** H5 at once, on every stage: abandon (`dispose`, or a terminate that ran out of time). */
  abandonAll(): void {
    // ORDERING: (H5) seq_cst store of the terminate word after the last H3; the runner's join wakes the kernel.
    for (const cb of this.cbs) cb.store32('terminate', TERMINATE.abandon)
  }

  /**
   * H5, stage by stage (PROTOCOL.md §14): each stage is told to stop once the one before it
   * has, so each drains into the next; `abandon` abandons the first stage only, so every
   * message the route took comes out of its last stage. `stuck()`: waiting is pointless (the
   * kernel host stopped or exited).
   */
  async terminateStages(mode: TerminateMode, stuck: () => boolean): Promise<void> {
    for (const [i, cb] of this.cbs.entries()) {
      // ORDERING: (H5) seq_cst store of the terminate word after the last H3 (every message
      // before it is in the ring), then wake the kernel unconditionally.
      cb.store32('terminate', mode === 'drain' || i > 0 ? TERMINATE.drain : TERMINATE.abandon)
      this.runner.wake()
      await this.until(() => cb.load32('state') === STATE.terminated || stuck(), 'terminate')
    }
  }

  /** H7: store what we wait for; keep the process alive while we wait on the kernel. */
  announce(bits: number): void {
    if (bits !== this.#waiting) {
      // ORDERING: (H7) seq_cst store of host_waiting before the pump re-checks the indices;
      // pairs with the kernel's store of its index then load of host_waiting (K7).
      if (this.outCb === this.cb) Atomics.store(this.cb.u32, this.#waitingIdx, bits)
      else {
        // A route: input room is the first stage's news, replies the last stage's.
        Atomics.store(this.cb.u32, this.#waitingIdx, bits & WAIT.input)
        Atomics.store(this.outCb.u32, this.#waitingIdx, bits & WAIT.output)
      }
      this.#waiting = bits
    }
    if (bits !== 0 && this.#keepAlive === undefined) this.#keepAlive = setInterval(() => this.pump(), 1000)
    else if (bits === 0 && this.#keepAlive !== undefined) {
      clearInterval(this.#keepAlive)
      this.#keepAlive = undefined
    }
  }

  /**
   * The host's event loop step, run on every doorbell and after every call: drain replies (H6),
   * refill the ring from the send queue (H2, H3), settle waiters, then announce what we wait
   * for (H7) and re-check, so no doorbell can be missed.
   */
  pump(): void {
    if (this.#pumping || this.closed) return
    if (!this.terminating && this.state() === 'terminated') {
      // The kernel stopped without being asked: it faulted (a trapping handler). Its service
      // thread took over its status words; join() reports the fault and everyone waiting gets it.
      this.terminating = true
      this.#onFault()
      return
    }
    const inbox = this.#inbox
    const outbox = this.#outbox
    this.#pumping = true
    try {
      for (;;) {
        const progress = inbox.drain() + outbox.flush()
        inbox.deliver()
        this.#settleStateWaiters()
        if (progress > 0) continue
        const wantOutput = (inbox.awaited || this.#stateWaiters.length > 0) && inbox.canDrain()
        const wantInput = outbox.wantsRoom
        this.announce((wantOutput ? WAIT.output : 0) | (wantInput ? WAIT.input : 0) | (this.#stateWaiters.length > 0 ? WAIT.output : 0))
        // ORDERING: (H7) the re-check after the announce: an index that moved before the
        // kernel could see our bits is seen here. (A spent budget has a setImmediate coming
        // that pumps again: replies wait for it.)
        if ((wantOutput && inbox.drainable()) || (wantInput && this.#in.free(1) > 0)) continue
        break
      }
    } finally {
      this.#pumping = false
    }
  }

  /** Resolves once `until()` holds, checked on every pump; `ERR_RINGBRIDGE_TIMEOUT` after the life-cycle limit. */
  until(until: () => boolean, what: string): Promise<void> {
    if (until()) return Promise.resolve()
    return new Promise<void>((resolve, reject) => {
      const w: StateWaiter = { resolve, reject, until }
      w.disarm = bound({ timeoutMs: this.#timeoutMs, signal: undefined }, () => {
        const i = this.#stateWaiters.indexOf(w)
        if (i >= 0) this.#stateWaiters.splice(i, 1)
        reject(new RingbridgeError('ERR_RINGBRIDGE_TIMEOUT', `${what}: the kernel did not answer within ${this.#timeoutMs} ms (state ${this.state()})`))
      })
      this.#stateWaiters.push(w)
      this.pump()
    })
  }

  #settleStateWaiters(): void {
    for (let i = this.#stateWaiters.length - 1; i >= 0; i--) {
      const w = this.#stateWaiters[i]!
      if (w.until()) {
        this.#stateWaiters.splice(i, 1)
        settleWaiter(w, { ok: true, value: undefined })
      }
    }
  }

  /** Rejects every life-cycle wait with `errorFor('wait')` (the kernel ended). */
  rejectStateWaiters(errorFor: (what: string) => Error): void {
    for (const w of this.#stateWaiters.splice(0)) settleWaiter(w, { ok: false, error: errorFor('wait') })
  }
}
