// Preloaded into the suite's client: the test host name resolves to the edge's loopback address
// (CACHE_TESTS_HOST -> CACHE_TESTS_ADDR), so the client's requests carry that Host and reach
// Parapet without touching the system's resolver configuration.
const dns = require('dns')
const original = dns.lookup
const host = process.env.CACHE_TESTS_HOST
const address = process.env.CACHE_TESTS_ADDR
dns.lookup = function (name, options, callback) {
  if (typeof options === 'function') {
    callback = options
    options = {}
  }
  if (name !== host) {
    return original.call(dns, name, options, callback)
  }
  if (options && options.all) {
    return process.nextTick(callback, null, [{ address, family: 4 }])
  }
  return process.nextTick(callback, null, address, 4)
}
