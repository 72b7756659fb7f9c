// Prints the initial JavaScript the browser loads (the entry's chunks), gzipped:
// the budget in issue 22 is 300 KB. Printed, not asserted.
import { readFileSync, readdirSync } from "node:fs";
import { gzipSync } from "node:zlib";

const html = readFileSync("dist/index.html", "utf8");
const scripts = [...html.matchAll(/(?:src|href)="\/(assets\/[^"]+\.js)"/g)].map((m) => m[1]);
let raw = 0;
let gz = 0;
for (const file of scripts) {
  const data = readFileSync(`dist/${file}`);
  raw += data.length;
  gz += gzipSync(data, { level: 9 }).length;
}
const all = readdirSync("dist/assets").length;
console.log(
  `console: initial JavaScript ${(gz / 1024).toFixed(1)} KB gzipped ` +
    `(${(raw / 1024).toFixed(1)} KB raw, ${scripts.length} file(s); ${all} assets in dist/)`,
);
