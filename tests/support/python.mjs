// The Python socket.io client (python-socketio from PyPI, in tests/.venv made by
// scripts/python-env.sh), driven from the JavaScript tests: one process per client, reporting
// what happens as JSON lines (tests/support/py_client.py).

import { existsSync } from "node:fs";
import path from "node:path";
import readline from "node:readline";
import { EventEmitter } from "node:events";
import { repoRoot, spawnTracked } from "./harness.mjs";

const WAIT_MS = 10_000;
const python = path.join(repoRoot, "tests/.venv/bin/python");

/** A python-socketio process running `script` (in tests/support) with `args`, reporting JSON
 * lines; `until(what, check)` waits for a condition on them. */
function pythonProcess(script, args, name) {
  if (!existsSync(python)) throw new Error(`${python} is missing: run \`bash scripts/python-env.sh\``);
  const child = spawnTracked(python, [path.join(repoRoot, "tests/support", script), ...args], name);
  const lines = [];
  const changes = new EventEmitter();
  readline.createInterface({ input: child.stdout }).on("line", (text) => {
    try {
      lines.push(JSON.parse(text));
    } catch {
      lines.push({ event: "non_json", text });
    }
    changes.emit("change");
  });
  child.on("exit", () => changes.emit("change"));
  return {
    child,
    lines,
    of: (event) => lines.filter((l) => l.event === event),
    until(what, check, timeoutMs = WAIT_MS) {
      if (check()) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          changes.off("change", onChange);
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; python client said: ${JSON.stringify(lines.slice(-8))}; stderr: ${child.stderrTail.slice(-1500)}`));
        }, timeoutMs);
        const onChange = () => {
          if (check()) {
            clearTimeout(timer);
            changes.off("change", onChange);
            resolve();
          }
        };
        changes.on("change", onChange);
      });
    },
    /** Closes its stdin: the client disconnects and exits. */
    stop() {
      child.stdin.end();
    },
  };
}

/** A python-socketio client that logs in as `userId` and acknowledges every direct message with
 * `chat_ack {ids}` (tests/support/py_person.py). */
export function pythonPerson(url, userId, deviceId, { transport = "websocket", seconds = 60 } = {}) {
  return pythonProcess("py_person.py", [url, userId, deviceId, transport, String(seconds)], `python-socketio person ${userId}/${transport}`);
}

/**
 * A python-socketio client (`mode` "sync" or "async", `transport` "websocket" or "polling")
 * that connects to `url` in `room`, joins as `username`, and reconnects by itself. `lines` holds
 * every report line; `until(what, check)` waits for a condition on them.
 */
export function pythonClient(url, room, username, { mode = "sync", transport = "websocket", seconds = 60 } = {}) {
  if (!existsSync(python)) throw new Error(`${python} is missing: run \`bash scripts/python-env.sh\``);
  const child = spawnTracked(
    python,
    [path.join(repoRoot, "tests/support/py_client.py"), url, room, username, mode, transport, String(seconds)],
    `python-socketio ${mode}/${transport} ${username}`,
  );
  const lines = [];
  const changes = new EventEmitter();
  readline.createInterface({ input: child.stdout }).on("line", (text) => {
    try {
      lines.push(JSON.parse(text));
    } catch {
      lines.push({ event: "non_json", text });
    }
    changes.emit("change");
  });
  child.on("exit", () => changes.emit("change"));
  return {
    child,
    lines,
    /** How many times it has connected so far. */
    connects: () => lines.filter((l) => l.event === "connect").length,
    until(what, check, timeoutMs = WAIT_MS) {
      if (check()) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          changes.off("change", onChange);
          reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; python client said: ${JSON.stringify(lines.slice(-8))}; stderr: ${child.stderrTail.slice(-1500)}`));
        }, timeoutMs);
        const onChange = () => {
          if (check()) {
            clearTimeout(timer);
            changes.off("change", onChange);
            resolve();
          }
        };
        changes.on("change", onChange);
      });
    },
    /** Closes its stdin: the client disconnects and exits. */
    stop() {
      child.stdin.end();
    },
  };
}
