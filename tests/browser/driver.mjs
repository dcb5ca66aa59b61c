// Drives Debian's chromium with playwright-core for the dashboard tests: one JSON command per
// line on stdin, one JSON answer per line on stdout ({"ok": value} or {"error": text}).
// Started by tests/support/browser.py; argv[2] is a fresh user data directory.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const context = await chromium.launchPersistentContext(process.argv[2], {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ARGS,
  viewport: { width: 1600, height: 1000 },
});
const page = context.pages()[0] || (await context.newPage());
const problems = []; // page errors and console errors, for the tests to assert on
const blocked = []; // requests refused in offline mode
page.on("pageerror", (err) => problems.push("pageerror: " + err.message));
page.on("console", (msg) => {
  if (msg.type() === "error") problems.push("console: " + msg.text());
});

async function run(c) {
  switch (c.cmd) {
    case "goto":
      if (c.offline) {
        await context.route("**/*", (route) => {
          const url = route.request().url();
          if (url.startsWith("file:") || url.startsWith("data:")) return route.continue();
          blocked.push(url);
          return route.abort();
        });
        await context.setOffline(true);
      }
      await page.goto(c.url, { waitUntil: "load" });
      return true;
    case "eval":
      return await page.evaluate(c.expr);
    case "wait":
      await page.waitForFunction(c.expr, null, { timeout: c.timeout || 30000, polling: 100 });
      return true;
    case "click":
      await page.click(c.selector, { timeout: c.timeout || 10000 });
      return true;
    case "fill":
      await page.fill(c.selector, c.value);
      return true;
    case "select":
      await page.selectOption(c.selector, c.value);
      return true;
    case "screenshot":
      await page.screenshot({ path: c.path, fullPage: !!c.fullPage });
      return c.path;
    case "problems":
      return { problems, blocked };
    case "close":
      await context.close();
      return true;
    default:
      throw new Error("unknown command " + c.cmd);
  }
}

const lines = createInterface({ input: process.stdin });
process.stdout.write(JSON.stringify({ ok: "ready" }) + "\n");
for await (const line of lines) {
  let answer;
  try {
    answer = { ok: (await run(JSON.parse(line))) ?? null };
  } catch (err) {
    answer = { error: String((err && err.stack) || err) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
  if (line.includes('"close"')) break;
}
process.exit(0);
