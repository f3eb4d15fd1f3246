// Types of the ESM entry (index.mjs): the same declarations as the CommonJS entry's index.d.ts,
// which index.mjs re-exports at run time.
export * from './index.js'
