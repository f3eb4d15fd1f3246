/**
 * `npx ringbridge <command>`: `doctor` (what works here and why) and `bench` (round trip and
 * streaming figures). `bin/ringbridge.js` calls {@link main} and exits with its code.
 * @internal
 * @module
 */
import { parseArgs } from 'node:util'

export const USAGE = `usage: ringbridge <command> [options]

commands:
  doctor   platform, binary, driver, NVRTC, GPUs, transports, kernel cache, a kernel host
           --backend auto|cuda|cpu   the backend that must work (default auto: any)
           --json                    one JSON object instead of text
  bench    request round trip (p50/p99) and chunk streaming against batch size
           --backend auto|cuda|cpu   (default auto)
           --quick                   fewer iterations (seconds)
           --json                    one JSON object instead of 'name value unit' lines
           --svg <file>              write an SVG report (latency histogram, throughput vs batch)
  help     this text

exit codes: 0 fine, 1 the asked-for backend cannot work (doctor) or a run failed, 2 bad usage`

/** Runs the CLI with `argv` (without `node` and the script); resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  let values: Record<string, string | boolean | undefined>
  try {
    values = parseArgs({
      args: rest,
      strict: true,
      options: {
        backend: { type: 'string', default: 'auto' },
        json: { type: 'boolean', default: false },
        quick: { type: 'boolean', default: false },
        svg: { type: 'string' },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }).values
  } catch (e) {
    console.error(`ringbridge: ${(e as Error).message}\n\n${USAGE}`)
    return 2
  }
  const backend = values.backend as string
  if (!['auto', 'cuda', 'cpu'].includes(backend)) {
    console.error(`ringbridge: --backend: expected auto, cuda or cpu, got '${backend}'`)
    return 2
  }
  if (values.help || command === undefined || command === 'help' || command === '--help' || command === '-h') {
    console.log(USAGE)
    return command === undefined ? 2 : 0
  }
  switch (command) {
    case 'doctor': {
      if (values.quick || values.svg !== undefined) return usage('doctor takes --backend and --json only')
      const { doctor } = await import('./doctor')
      return doctor({ backend: backend as 'auto' | 'cuda' | 'cpu', json: values.json === true })
    }
    case 'bench': {
      const { bench } = await import('./bench')
      return bench({ backend: backend as 'auto' | 'cuda' | 'cpu', json: values.json === true, quick: values.quick === true, svg: values.svg as string | undefined })
    }
    default:
      return usage(`unknown command '${command}'`)
  }
}

function usage(message: string): number {
  console.error(`ringbridge: ${message}\n\n${USAGE}`)
  return 2
}
