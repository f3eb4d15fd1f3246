/**
 * Entry point of a kernel host process (`isolation: 'process'`): started by the addon with a
 * control socket on stdin, it serves one kernel for its parent and exits when the parent stops
 * it or goes away. Shutdown is the parent's: the host runs in a process group of its own and
 * `serveKernelHost()` ignores SIGINT, SIGTERM, SIGHUP and SIGTTOU, so a Ctrl-C or a service
 * manager's stop lets the parent drain first. Not part of the API and never run by hand.
 * @internal
 * @module
 */
import native from './binding'

process.exitCode = native.serveKernelHost()
