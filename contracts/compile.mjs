// Compiles the settlement contract (and the contracts its tests use) with the pinned solc
// from package.json, through solc's standard JSON, and writes each contract's ABI and
// bytecode to build/<Name>.json. `--check` compares with the committed files instead and
// exits 1 when they differ. Run through scripts/contracts.sh.
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const solc = createRequire(import.meta.url)("solc");
const here = dirname(fileURLToPath(import.meta.url));
const check = process.argv.includes("--check");
const sources = ["ZeroStateChannels.sol", "test/ReentrantPayee.sol"];

const input = {
  language: "Solidity",
  sources: Object.fromEntries(
    sources.map((file) => [file, { content: readFileSync(join(here, file), "utf8") }]),
  ),
  settings: {
    optimizer: { enabled: true, runs: 200 },
    evmVersion: "cancun",
    outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
  },
};
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const errors = (output.errors ?? []).filter((e) => e.severity === "error");
for (const e of output.errors ?? []) console.error(e.formattedMessage);
if (errors.length > 0) process.exit(1);

mkdirSync(join(here, "build"), { recursive: true });
let differ = 0;
for (const file of sources) {
  for (const [name, contract] of Object.entries(output.contracts[file])) {
    if (!contract.evm.bytecode.object) continue; // interfaces
    const text =
      JSON.stringify(
        {
          compiler: `solc ${solc.version()}`,
          source: file,
          abi: contract.abi,
          bytecode: `0x${contract.evm.bytecode.object}`,
        },
        null,
        1,
      ) + "\n";
    const path = join(here, "build", `${name}.json`);
    if (check) {
      let committed = "";
      try {
        committed = readFileSync(path, "utf8");
      } catch {}
      if (committed !== text) {
        console.error(`build/${name}.json differs from what ${solc.version()} makes of ${file}`);
        differ += 1;
      } else {
        console.log(`build/${name}.json matches ${file} (${solc.version()})`);
      }
    } else {
      writeFileSync(path, text);
      console.log(`wrote build/${name}.json`);
    }
  }
}
process.exit(differ > 0 ? 1 : 0);
