/**
 * Preloaded into every test file's process by `npm test` (`node --test --import`). A file whose
 * tests are over but which leaves something running (a timer, a socket, a child it started) would
 * hold the whole run until CI's deadline; once the file's tests and hooks are done, it gets
 * EXIT_GRACE_MS to end by itself, then exits with the runner's verdict (process.exitCode).
 *
 * This replaces `--test-force-exit`, which exits the moment the last test ends and can drop the
 * verdicts still on their way to the parent: the report then counts fewer tests than ran, at exit 0
 * (nodejs/node#64833; a failure still fails the run, through the file's exit code, but without its
 * name). The grace lets those reports reach the parent first.
 */
import { after } from "node:test";

const EXIT_GRACE_MS = 2_000;

// Only in a test file's own process: the parent runner loads this too, and must not exit early.
if (process.env.NODE_TEST_CONTEXT?.startsWith("child") === true) {
  after(() => {
    setTimeout(() => process.exit(), EXIT_GRACE_MS).unref();
  });
}
