/**
 * Preloaded into every test file's process by `npm test` (`node --test --test-force-exit --import`).
 *
 * `--test-force-exit` ends a file's process once its tests and hooks are done, even if something it
 * started still runs, so one failure cannot hold the whole run until CI's deadline. But it calls
 * process.exit() while the last verdicts may still be on their way to the parent runner, which then
 * reports fewer tests than ran, at exit 0 (nodejs/node#64833; a failure still fails the run, through
 * the file's exit code, but without its name). Here process.exit() first lets what was written to
 * stdout (the runner's reports) reach the parent, for at most EXIT_DRAIN_MAX_MS.
 */

const EXIT_DRAIN_MAX_MS = 5_000;

// Only in a test file's own process: the parent runner loads this too.
if (process.env.NODE_TEST_CONTEXT?.startsWith("child") === true) {
  const exit = process.exit.bind(process);
  process.exit = ((code?: number | string | null) => {
    const done = () => exit(code);
    setTimeout(done, EXIT_DRAIN_MAX_MS);
    // Writes are flushed in order: this callback runs once everything written before it has gone.
    process.stdout.write("", done);
  }) as typeof process.exit;
}
