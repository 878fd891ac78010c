//! The same task gives the same output and the same fuel whatever the engine's cache holds
//! (cold compile, the in-memory cache, the disk cache in a new engine), and a run cut off
//! by its wall-time limit states the fuel it burnt.

use zerostate_execution::{Engine, EngineOptions, ExecutorKey, Manifest, TaskError, builtin};

use crate::harness::{engine, manifest};

/// The floating-point module whose NaNs the spec leaves open.
const FLOATS: &str = include_str!("../floats.wat");

fn tasks() -> Vec<Manifest> {
    let mut all: Vec<Manifest> = [
        ("primes", &b"100000"[..]),
        ("matmul", b"24"),
        ("crc32", b"zerostate"),
    ]
    .iter()
    .map(|(name, input)| builtin::manifest(name, "same-task", input.to_vec()).expect("built-in"))
    .collect();
    let mut floats = manifest(FLOATS);
    floats.task_id = "same-task".into();
    all.push(floats);
    all
}

#[test]
fn output_and_fuel_do_not_depend_on_the_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let with_disk = || {
        let options = EngineOptions {
            disk_cache: Some(dir.path().to_owned()),
            ..EngineOptions::default()
        };
        Engine::new(options, ExecutorKey::from_seed([9; 32])).expect("engine")
    };
    for task in tasks() {
        let mut seen = std::collections::BTreeSet::new();
        let mut states = std::collections::BTreeSet::new();
        // 20 runs: cold in a fresh engine, from its memory cache, and from the disk cache
        // in a new engine.
        let mut runs = 0;
        while runs < 20 {
            let cold = engine();
            let disk_writer = with_disk();
            let disk_reader = with_disk();
            for (state, engine) in [
                ("cold", &cold),
                ("memory", &cold),
                ("disk", &disk_writer),
                ("disk", &disk_reader),
            ] {
                let run = engine.run(&task);
                assert_eq!(run.result, Ok(()), "{}", task.entry);
                if state == "disk" && run.measurement.from_disk {
                    states.insert("from disk");
                } else {
                    states.insert(state);
                }
                seen.insert((
                    run.receipt.output_sha256.clone(),
                    run.receipt.fuel_consumed,
                    run.receipt.engine.clone(),
                ));
                runs += 1;
            }
        }
        assert_eq!(seen.len(), 1, "{}: {seen:?}", task.entry);
        assert!(states.contains("from disk"), "{states:?}");
        let (_, fuel, id) = seen.into_iter().next().expect("one");
        assert!(fuel > 0);
        assert_eq!(id, engine().id());
    }
}

#[test]
fn nan_bits_are_canonical() {
    let run = engine().run(&manifest(FLOATS));
    assert_eq!(run.result, Ok(()));
    let f64_at = |i: usize| u64::from_le_bytes(run.output[i..i + 8].try_into().expect("8"));
    let f32_at = |i: usize| u32::from_le_bytes(run.output[i..i + 4].try_into().expect("4"));
    // Every NaN is the canonical one (positive, quiet, no payload).
    for at in [0, 8, 16, 32, 44] {
        assert_eq!(f64_at(at), 0x7ff8_0000_0000_0000, "f64 at {at}");
    }
    for at in [24, 28, 40] {
        assert_eq!(f32_at(at), 0x7fc0_0000, "f32 at {at}");
    }
}

#[test]
fn a_run_cut_off_by_its_wall_time_states_the_fuel_it_burnt() {
    let mut m = manifest(
        r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#,
    );
    m.limits.wall_time_ms = 200;
    let run = engine().run(&m);
    assert_eq!(run.result, Err(TaskError::WallTimeExceeded(200)));
    let fuel = run.receipt.fuel_consumed;
    assert!(
        fuel > 1_000_000,
        "an endless loop for 200 ms burns fuel: {fuel}"
    );
    assert!(fuel < m.limits.fuel);
    assert!(
        run.measurement.wall_time < std::time::Duration::from_millis(400),
        "{:?}",
        run.measurement.wall_time
    );
    assert!(run.receipt.verify().is_ok());
}
