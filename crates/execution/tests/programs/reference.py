"""Runs a WASI preview 1 module under the official wasmtime runtime (its Python package),
the reference the engine's runs are compared with.

    python3 reference.py MODULE STDIN STDOUT STDERR [--input DIR] [--output DIR]
                         [--env KEY=VALUE ...] [-- ARG ...]

DIR of --input is preopened read-only as /input, DIR of --output writable as /output.
Writes the program's stdout and stderr to the files named and prints its exit code."""
import argparse
import sys

import wasmtime

parser = argparse.ArgumentParser()
parser.add_argument("module")
parser.add_argument("stdin")
parser.add_argument("stdout")
parser.add_argument("stderr")
parser.add_argument("--input")
parser.add_argument("--output")
parser.add_argument("--env", action="append", default=[])
argv = sys.argv[1:]
split = argv.index("--") if "--" in argv else len(argv)
opts = parser.parse_args(argv[:split])
opts.args = argv[split + 1 :]

engine = wasmtime.Engine()
module = wasmtime.Module.from_file(engine, opts.module)
linker = wasmtime.Linker(engine)
linker.define_wasi()
store = wasmtime.Store(engine)
config = wasmtime.WasiConfig()
config.argv = ["task"] + opts.args
config.env = [tuple(e.split("=", 1)) for e in opts.env]
config.stdin_file = opts.stdin
config.stdout_file = opts.stdout
config.stderr_file = opts.stderr
if opts.input:
    config.preopen_dir(opts.input, "/input", fs_mutable=False)
if opts.output:
    config.preopen_dir(opts.output, "/output")
store.set_wasi(config)
instance = linker.instantiate(store, module)
try:
    instance.exports(store)["_start"](store)
    code = 0
except wasmtime.ExitTrap as e:
    code = e.code
print(code)
