// Counts the suite's results the way its site does (dependencies honoured): failures of required
// tests, of optimal ones, and harness or setup failures, for Parapet's run and for each result
// published with the suite. Usage: node summary.mjs SUITE_DIR PARAPET_RESULTS.json [MAX_REQUIRED]
// Exits 1 when Parapet fails more required tests than MAX_REQUIRED (default: the best published).
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const [suiteDir, ownFile, maxArg] = process.argv.slice(2)
const load = rel => import(pathToFileURL(path.join(suiteDir, rel)).href)
const tests = (await load('tests/index.mjs')).default
tests.push((await load('tests/surrogate-control.mjs')).default)
const display = await load('lib/display.mjs')
const published = (await load('results/index.mjs')).default

function count (results) {
  const out = { required: 0, optimal: 0, other: 0, failed: [] }
  for (const suite of tests) {
    for (const test of suite.tests) {
      const r = display.determineTestResult(tests, test.id, results)
      if (r[2] === '⛔️') {
        out.required += 1
        out.failed.push(test.id)
      } else if (r[2] === '⚠️') {
        out.optimal += 1
      } else if (['🔹', '⁉️', '↻'].includes(r[2])) {
        out.other += 1
      }
    }
  }
  return out
}

const rows = []
for (const item of published.filter(i => i.type !== 'browser')) {
  const results = JSON.parse(fs.readFileSync(path.join(suiteDir, 'results', item.file), 'utf8'))
  rows.push([`${item.name} ${item.version}`, count(results)])
}
const own = count(JSON.parse(fs.readFileSync(ownFile, 'utf8')))
rows.sort((a, b) => a[1].required - b[1].required)
console.log('implementation                     required-fail optimal-fail harness/setup')
for (const [name, c] of [['Parapet', own], ...rows]) {
  console.log(`${name.padEnd(34)} ${String(c.required).padStart(13)} ${String(c.optimal).padStart(12)} ${String(c.other).padStart(13)}`)
}
console.log(`Parapet's failed required tests: ${own.failed.join(' ') || 'none'}`)
const best = Math.min(...rows.map(r => r[1].required))
const max = maxArg === undefined ? best : Number(maxArg)
if (own.required > max) {
  console.log(`FAIL: ${own.required} required failures, more than ${max}`)
  process.exit(1)
}
console.log(`ok: ${own.required} required failures (best published: ${best})`)
