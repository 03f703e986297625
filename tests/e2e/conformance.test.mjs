// The socket.io and engine.io protocol suites (tests/conformance/, see its README) against
// `chat-cluster conformance`, the fixture the official suites expect.

import { after, before, describe } from "node:test";
import { spawn } from "node:child_process";
import { binary, cleanup, freePort, until } from "../support/harness.mjs";
import { engineIoSuite } from "../conformance/engine-io.mjs";
import { socketIoSuite } from "../conformance/socket-io.mjs";

const port = await freePort();
const base = `http://127.0.0.1:${port}`;
let fixture;

describe("protocol conformance", () => {
  before(async () => {
    fixture = spawn(binary, ["conformance", "--port", String(port)], { stdio: ["ignore", "ignore", "inherit"] });
    await until("the conformance fixture to answer", async () => {
      try {
        return (await fetch(`${base}/engine.io/?EIO=4&transport=polling`)).ok;
      } catch {
        return false;
      }
    });
  });
  after(async () => {
    if (fixture && fixture.exitCode === null) {
      const exited = new Promise((resolve) => fixture.once("exit", resolve));
      process.kill(fixture.pid, "SIGTERM");
      await exited;
    }
    await cleanup();
  });

  engineIoSuite(base, "/engine.io/", { echo: true });
  engineIoSuite(base, "/socket.io/", { echo: false });
  socketIoSuite(base);
});
