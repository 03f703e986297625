// `bash scripts/run.sh 2>&1 | tee run.log`, then Ctrl-C: the script stops everything it started
// even though tee, its output, dies with the same Ctrl-C (issue 15, point 7).

import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { alive, binary, freePort, freePortRange, repoRoot, until } from "../support/harness.mjs";

/** The pids run.sh recorded in its runtime directory (supervisor, nginx, and Redis if it started one). */
function recordedPids(runDir) {
  return Object.fromEntries(
    readdirSync(runDir)
      .filter((name) => name.endsWith(".pid"))
      .map((name) => [name.slice(0, -4), Number(readFileSync(path.join(runDir, name), "utf8").trim())]),
  );
}

describe("scripts/run.sh", () => {
  const leftovers = new Set();
  let runDir;
  after(() => {
    // Whatever the test saw, nothing it caused to run may outlive it: stop the leftovers by PID
    // (run.sh starts each in a session of its own, so its group takes nginx's workers along).
    for (const pid of leftovers) {
      for (const target of [-pid, pid]) {
        try {
          process.kill(target, "SIGKILL");
        } catch {
          // Gone already, or not a group leader.
        }
      }
    }
    if (runDir) rmSync(runDir, { recursive: true, force: true });
  });

  test("Ctrl-C on `run.sh | tee` stops the supervisor, its workers, nginx and its Redis", async () => {
    runDir = mkdtempSync(path.join(os.tmpdir(), "chat-run-"));
    const basePort = await freePortRange(2);
    const adminPort = await freePort();
    const httpPort = await freePort();
    const command = [
      "bash scripts/run.sh",
      `--bin ${binary} --run-dir ${runDir}`,
      `--workers 2 --base-port ${basePort} --admin-port ${adminPort} --http-port ${httpPort}`,
      `2>&1 | tee ${runDir}/tee.log`,
    ].join(" ");
    // Its own process group, as a terminal's foreground job: Ctrl-C is SIGINT to the group.
    const shell = spawn("bash", ["-c", command], { cwd: repoRoot, detached: true, stdio: "ignore" });
    const shellExited = new Promise((resolve) => shell.once("exit", resolve));
    leftovers.add(shell.pid);

    let status;
    await until(
      "the cluster to answer through nginx",
      async () => {
        const page = await fetch(`http://127.0.0.1:${httpPort}/monitor`);
        status = await (await fetch(`http://127.0.0.1:${adminPort}/status`)).json();
        return page.ok && status.workers.every((w) => w.state === "ready");
      },
      { timeoutMs: 60_000, everyMs: 200 },
    );
    const pids = recordedPids(runDir);
    const workers = status.workers.map((w) => w.pid);
    for (const pid of [...Object.values(pids), ...workers]) leftovers.add(pid);
    assert.ok(pids.supervisor && pids.nginx, `run.sh recorded its processes: ${JSON.stringify(pids)}`);
    const everything = { ...pids, ...Object.fromEntries(workers.map((pid, i) => [`worker${i}`, pid])) };
    for (const [name, pid] of Object.entries(everything)) assert.ok(alive(pid), `${name} (pid ${pid}) runs`);

    process.kill(-shell.pid, "SIGINT");
    await shellExited;
    await until(
      "every process run.sh started to stop",
      () => Object.values(everything).every((pid) => !alive(pid)),
      { timeoutMs: 30_000, everyMs: 100 },
    ).catch((err) => {
      const running = Object.entries(everything).filter(([, pid]) => alive(pid));
      throw new Error(`${err.message}; still running: ${JSON.stringify(running)}; run.sh said: ${readFileSync(`${runDir}/tee.log`, "utf8").slice(-2000)}`);
    });
  });
});
