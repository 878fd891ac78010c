//! ZeroState's WASI host (`crates/execution/src/wasi/`) beside wasmtime's own
//! (`wasmtime-wasi`, its preview-1 context), on the same wasmtime version with fuel on:
//! what creating a store and instantiating a WASI module costs, what 1,000 writes of 1 KiB
//! and of 1 byte to stdout cost (ours includes the receipt: the output's SHA-256 and the
//! signature), and the fuel each states for the 1 KiB writes. Rounds alternate between the
//! two hosts; the table gives the median round and the spread (slowest over fastest).
//!
//! ```text
//! cargo run --release --manifest-path bench/wasi-hosts/Cargo.toml
//! ```

use std::time::Instant;

use wasmtime::{Config, Linker, Module, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::{self, WasiP1Ctx};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use zerostate_execution::{Engine, EngineOptions, ExecutorKey, Manifest};

/// A WASI command that writes `count` times `size` bytes to stdout.
fn writer(count: u32, size: u32) -> String {
    format!(
        r#"(module
          (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
          (memory (export "memory") 1)
          (func (export "_start") (local $i i32)
            (i32.store (i32.const 0) (i32.const 1024))
            (i32.store (i32.const 4) (i32.const {size}))
            (block $done (loop $next
              (br_if $done (i32.ge_u (local.get $i) (i32.const {count})))
              (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))
              (local.set $i (i32.add (local.get $i) (i32.const 1)))
              (br $next)))))"#
    )
}

const ROUNDS: usize = 7;
const PER_ROUND: u32 = 200;

struct Theirs {
    engine: wasmtime::Engine,
    pre: wasmtime::InstancePre<WasiP1Ctx>,
}

impl Theirs {
    fn new(wat: &str) -> Self {
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .cranelift_nan_canonicalization(true);
        let engine = wasmtime::Engine::new(&config).expect("engine");
        let module = Module::new(&engine, wat).expect("module");
        let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
        p1::add_to_linker_sync(&mut linker, |cx| cx).expect("linked");
        let pre = linker.instantiate_pre(&module).expect("pre");
        Self { engine, pre }
    }

    /// Store and instantiation, then `_start` when `call`; the fuel consumed.
    fn run(&self, call: bool) -> u64 {
        let ctx = WasiCtxBuilder::new()
            .arg("task")
            .stdout(MemoryOutputPipe::new(2 << 20))
            .build_p1();
        let mut store = Store::new(&self.engine, ctx);
        store.set_fuel(10_000_000_000).expect("fuel");
        let instance = self.pre.instantiate(&mut store).expect("instantiates");
        if call {
            let start = instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .expect("_start");
            start.call(&mut store, ()).expect("runs");
        }
        10_000_000_000 - store.get_fuel().expect("fuel")
    }
}

fn ours(wat: &str) -> (Engine, Manifest) {
    let engine =
        Engine::new(EngineOptions::default(), ExecutorKey::from_seed([7; 32])).expect("engine");
    let mut manifest = Manifest::new("bench", wat.as_bytes().to_vec());
    manifest.limits.output_bytes = 2 << 20;
    engine.dry_run(&manifest).expect("compiles");
    (engine, manifest)
}

/// Median and spread of per-call microseconds over rounds.
fn figures(mut rounds: Vec<f64>) -> (f64, f64) {
    rounds.sort_by(f64::total_cmp);
    (
        rounds[rounds.len() / 2],
        rounds[rounds.len() - 1] / rounds[0],
    )
}

fn time(mut f: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..PER_ROUND {
        f();
    }
    started.elapsed().as_secs_f64() * 1e6 / f64::from(PER_ROUND)
}

fn main() {
    let trivial = writer(0, 0);
    let writes = writer(1000, 1024);
    let small = writer(1000, 1);
    let (our_engine, our_trivial) = ours(&trivial);
    let (_, our_writes) = ours(&writes);
    let (_, our_small) = ours(&small);
    let (their_trivial, their_writes, their_small) = (
        Theirs::new(&trivial),
        Theirs::new(&writes),
        Theirs::new(&small),
    );

    let mut rows: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![
        ("store and instantiate, us", Vec::new(), Vec::new()),
        ("1,000 writes of 1 KiB, us", Vec::new(), Vec::new()),
        ("1,000 writes of 1 byte, us", Vec::new(), Vec::new()),
    ];
    for _ in 0..ROUNDS {
        rows[0].1.push(time(|| {
            our_engine.dry_run(&our_trivial).expect("instantiates");
        }));
        rows[0].2.push(time(|| {
            their_trivial.run(false);
        }));
        rows[1].1.push(time(|| {
            our_engine.run(&our_writes).result.expect("runs");
        }));
        rows[1].2.push(time(|| {
            their_writes.run(true);
        }));
        rows[2].1.push(time(|| {
            our_engine.run(&our_small).result.expect("runs");
        }));
        rows[2].2.push(time(|| {
            their_small.run(true);
        }));
    }
    println!("| measure | ours | spread | wasmtime-wasi | spread | ours / theirs |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, mine, theirs) in rows {
        let ((m, ms), (t, ts)) = (figures(mine), figures(theirs));
        println!(
            "| {name} | {m:.2} | {ms:.2}x | {t:.2} | {ts:.2}x | {:.2} |",
            m / t
        );
    }
    let our_fuel = our_engine.run(&our_writes).measurement.fuel_consumed;
    let their_fuel = their_writes.run(true);
    println!(
        "| fuel stated for the 1,000 writes | {our_fuel} | | {their_fuel} | | {:.2} |",
        our_fuel as f64 / their_fuel as f64
    );
}
