#!/usr/bin/env node
// `npx ringbridge <command>`: the CLI compiled from ts/cli/*.ts (doctor, bench).
'use strict'
require('../ts/cli/main.js')
  .main(process.argv.slice(2))
  .then((code) => { process.exitCode = code })
  .catch((err) => {
    console.error(err && err.stack ? err.stack : err)
    process.exitCode = 1
  })
