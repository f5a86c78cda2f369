// Builds the console's assets into query_api/console_assets (shipped in the Python
// package, so the console needs no network at run time): uPlot's minified IIFE and
// CSS from node_modules (pinned in package.json, locked in package-lock.json) are put
// in front of the console's own JavaScript and CSS, one file each. Plain file
// concatenation, no bundler: the output is the same bytes for the same inputs.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "query_api", "console_assets");
const require = createRequire(import.meta.url);
const uplotDir = dirname(require.resolve("uplot/package.json"));
const uplotVersion = JSON.parse(readFileSync(join(uplotDir, "package.json"), "utf8")).version;
const read = (...parts) => readFileSync(join(...parts), "utf8");
const banner = `/* built by console/build.mjs from console/src and uPlot ${uplotVersion} (MIT, https://github.com/leeoniya/uPlot): do not edit */\n`;

mkdirSync(out, { recursive: true });
writeFileSync(join(out, "console.js"),
  banner + read(uplotDir, "dist", "uPlot.iife.min.js") + "\n" + read(here, "src", "console.js"));
writeFileSync(join(out, "console.css"),
  banner + read(uplotDir, "dist", "uPlot.min.css") + "\n" + read(here, "src", "console.css"));
writeFileSync(join(out, "index.html"), read(here, "src", "index.html"));
writeFileSync(join(out, "LICENSE.uPlot.txt"), read(uplotDir, "LICENSE"));
console.log(`console assets written to ${out} (uPlot ${uplotVersion})`);
