/**
 * A latency histogram cheap enough for the request path: log-linear buckets (8 per power of two
 * of nanoseconds, so any value is within 12.5 % of its bucket's bound), one array increment per
 * sample, percentiles computed only when asked.
 * @module
 */

const SUB = 8
const BUCKETS = 64 * SUB

/**
 * Latency percentiles in microseconds (upper bounds of log-linear buckets, within 12.5 %).
 * @example
 * ```ts
 * const l: LatencyPercentiles = kernel.stats().requestLatency
 * console.log(`p50 ${l.p50} µs, p99 ${l.p99} µs over ${l.count}`)
 * ```
 */
export interface LatencyPercentiles {
  /** Samples recorded. */
  count: number
  /** Median. */
  p50: number
  /** 90th percentile. */
  p90: number
  /** 99th percentile. */
  p99: number
  /** 99.9th percentile. */
  p999: number
  /** Largest sample (exact). */
  max: number
}

/** @internal Log-linear histogram of durations. */
export class LatencyHistogram {
  readonly #counts = new Float64Array(BUCKETS)
  #n = 0
  #max = 0

  /** Records one duration in milliseconds (as `performance.now()` differences are). */
  record(ms: number): void {
    const ns = Math.max(1, Math.round(ms * 1e6))
    const exp = 31 - Math.clz32(Math.min(ns, 0xffffffff))
    const exp2 = ns > 0xffffffff ? Math.floor(Math.log2(ns)) : exp
    const sub = exp2 < 3 ? ns & (SUB - 1) : Math.floor(ns / 2 ** (exp2 - 3)) - SUB
    const i = Math.min(BUCKETS - 1, exp2 * SUB + sub)
    this.#counts[i] = this.#counts[i]! + 1
    this.#n++
    if (ms > this.#max) this.#max = ms
  }

  /** The upper bound of bucket `i`, in ns. */
  static #bound(i: number): number {
    const exp = Math.floor(i / SUB)
    const sub = i % SUB
    return exp < 3 ? sub + 1 : (SUB + sub + 1) * 2 ** (exp - 3)
  }

  /** p50, p90, p99, p999 and max, in µs. */
  percentiles(): LatencyPercentiles {
    const at = (q: number) => {
      if (this.#n === 0) return 0
      const rank = Math.ceil(q * this.#n)
      let seen = 0
      for (let i = 0; i < BUCKETS; i++) {
        seen += this.#counts[i]!
        if (seen >= rank) return Math.min(LatencyHistogram.#bound(i), this.#max * 1e6) / 1000
      }
      return this.#max * 1000
    }
    return { count: this.#n, p50: at(0.5), p90: at(0.9), p99: at(0.99), p999: at(0.999), max: this.#max * 1000 }
  }
}
