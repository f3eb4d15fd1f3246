/**
 * The native module, loaded once. Only modules inside `ts/` import it; users see the facade.
 * @internal
 * @module
 */
// eslint-disable-next-line @typescript-eslint/no-require-imports
import native = require('./native')

export = native
