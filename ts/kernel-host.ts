/**
 * Entry point of a kernel host process (`isolation: 'process'`): started by the addon with a
 * control socket on stdin, it serves one kernel for its parent and exits when the parent stops
 * it or goes away. Shutdown is the parent's: the host runs in a process group of its own and
 * `serveKernelHost()` ignores SIGINT, SIGTERM, SIGHUP and SIGTTOU, so a Ctrl-C or a service
 * manager's stop lets the parent drain first. Not part of the API and never run by hand.
 *
 * The parent runs this file as `node <dir>/ts/kernel-host.js`; only then (it is the main
 * module) does it serve. Importing it (`ringbridge/kernel-host`) does nothing: not even the
 * native addon loads until `run()` is called.
 * @internal
 * @module
 */
import type native from './binding'

/**
 * Serves one kernel over the control socket on stdin until the parent stops it or goes away;
 * sets `process.exitCode` to the host's exit status and returns it.
 * @example
 * ```js
 * // a custom kernel host script (what `node ts/kernel-host.js` does)
 * require('ringbridge/kernel-host').run()
 * ```
 */
export function run(): number {
  // Loaded here, not at the top: importing this module must not load the addon.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const binding = require('./binding') as { default?: typeof native } & typeof native
  const status = (binding.default ?? binding).serveKernelHost()
  process.exitCode = status
  return status
}

if (require.main === module) run()
