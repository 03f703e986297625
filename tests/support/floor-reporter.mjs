// A node:test reporter that fails the run when fewer test files or passing tests ran than the
// floor below: `node --test` passes with zero tests when no file matches, or when a file's
// tests were skipped or never registered. Raise the floor when tests are added.
// Counts every test (not suites) that passed, and the files declaring them; prints one line
// on stderr.

/** Files that declared tests that ran: the files under e2e/ and the conformance suites they
 * import (a test counts for the file that declares it); 32 in the full run of 2026-11-30 with
 * the Redis Cluster and Sentinel files, the old clients' and migration.test.mjs (issue 14). */
const MIN_FILES = 32;
/** Tests that must have passed, over all files (194 in that run). */
const MIN_PASSED = 194;

export default async function* floorReporter(source) {
  const files = new Set();
  let passed = 0;
  for await (const event of source) {
    if (event.type !== "test:pass" && event.type !== "test:fail") continue;
    if (event.data.file) files.add(event.data.file);
    if (event.type === "test:pass" && event.data.details?.type !== "suite") passed += 1;
  }
  const short = files.size < MIN_FILES || passed < MIN_PASSED;
  yield `e2e floor: ${files.size} test files ran (at least ${MIN_FILES}), ${passed} tests passed (at least ${MIN_PASSED})${short ? ": BELOW THE FLOOR" : ""}\n`;
  if (short) process.exitCode = 1;
}
