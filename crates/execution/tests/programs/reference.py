"""Runs a WASI preview 1 module under the official wasmtime runtime (its Python package),
the reference the engine's runs are compared with: no preopened directory, no environment.

    python3 reference.py MODULE STDIN STDOUT STDERR [ARG ...]

Writes the program's stdout and stderr to the files named and prints its exit code."""
import sys

import wasmtime

module_path, stdin, stdout, stderr, *args = sys.argv[1:]
engine = wasmtime.Engine()
module = wasmtime.Module.from_file(engine, module_path)
linker = wasmtime.Linker(engine)
linker.define_wasi()
store = wasmtime.Store(engine)
config = wasmtime.WasiConfig()
config.argv = ["task"] + args
config.stdin_file = stdin
config.stdout_file = stdout
config.stderr_file = stderr
store.set_wasi(config)
instance = linker.instantiate(store, module)
try:
    instance.exports(store)["_start"](store)
    code = 0
except wasmtime.ExitTrap as e:
    code = e.code
print(code)
