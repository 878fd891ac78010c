//! Writes the binary seeds of the corpora (`corpus/<target>/seed-*`) from the real
//! encoders, so that fuzzing starts from inputs each decoder accepts. The text seeds
//! (JSON, TOML, headers) are kept as written.
//!
//! ```text
//! cargo run -p zerostate-fuzz --example seeds
//! ```

use std::path::Path;

use prost::Message;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    std::fs::create_dir_all(&dir).expect("corpus directory");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed written");
}

fn main() {
    // The p2p envelope, with and without a trace context.
    let mut e = zerostate_p2p::Envelope::new("task_request", br#"{"task_id":"t"}"#.to_vec(), None);
    e.traceparent = TRACEPARENT.into();
    e.tracestate = "zs=1".into();
    e.baggage = "task.id=t".into();
    write("envelope", "traced", &e.encode());
    write(
        "envelope",
        "plain",
        &zerostate_p2p::Envelope::new("guild_heartbeat", vec![1, 2, 3], None).encode(),
    );

    // Guild wire messages.
    use zerostate_guild::wire::{Heartbeat, Membership, Plain, Sealed};
    let heartbeat = Heartbeat {
        guild_id: "3d033ca9b9f286c3".into(),
        seq: 7,
        version: 2,
        ..Default::default()
    };
    write("guild_wire", "heartbeat", &heartbeat.encode_to_vec());
    let membership = Membership {
        guild_id: "3d033ca9b9f286c3".into(),
        version: 2,
        ..Default::default()
    };
    write("guild_wire", "membership", &membership.encode_to_vec());
    let sealed = Sealed {
        guild_id: "3d033ca9b9f286c3".into(),
        traceparent: TRACEPARENT.into(),
        ciphertext: vec![9; 48],
        nonce: vec![1; 24],
        ..Default::default()
    };
    write("guild_wire", "sealed", &sealed.encode_to_vec());
    write(
        "guild_wire",
        "plain",
        &Plain {
            message_type: "task_request".into(),
            body: b"{}".to_vec(),
            traceparent: TRACEPARENT.into(),
            ..Default::default()
        }
        .encode_to_vec(),
    );

    // The binary trace context.
    let mut headers = std::collections::HashMap::new();
    headers.insert("traceparent".to_owned(), TRACEPARENT.to_owned());
    headers.insert("baggage".to_owned(), "task.id=t".to_owned());
    let cx = zerostate_telemetry::propagation::extract(&headers).expect("a valid context");
    write(
        "trace_context",
        "binary",
        &zerostate_telemetry::propagation::to_bytes(&cx),
    );

    // A signed payment state.
    use zerostate_payment::{ChannelId, ChannelState, Keypair, LedgerId};
    let state = ChannelState::initial(LedgerId([1; 32]), ChannelId([2; 32]));
    write(
        "payment_state",
        "initial",
        &state.sign(&Keypair::from_seed([7; 32])).to_bytes(),
    );

    // An OTLP protobuf body (the JSON corpus holds the same as JSON, written by hand).
    let json = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/otlp_json/seed-two-spans.json"),
    )
    .expect("the JSON seed exists");
    let (request, _, _) =
        zerostate_collector::decode_export(&json, true, 1 << 20).expect("the JSON seed decodes");
    write("otlp_protobuf", "two-spans", &request.encode_to_vec());

    // A task result carrying a signed receipt, and the receipt alone.
    let key = zerostate_execution::ExecutorKey::from_seed([3; 32]);
    let receipt = zerostate_execution::Receipt {
        task_id: "ded4a4b8a56e6559".into(),
        module_sha256: "00".repeat(32),
        input_sha256: "11".repeat(32),
        output_sha256: "22".repeat(32),
        entry: "run".into(),
        args: vec!["10".into()],
        env: vec!["LANG=C".into()],
        files_sha256: "33".repeat(32),
        output_files_sha256: "44".repeat(32),
        limits: zerostate_execution::Limits::default(),
        status: "ok".into(),
        error: None,
        fuel_consumed: 2696,
        peak_memory_bytes: 65536,
        wall_time_us: 3000,
        executor: key.peer_id(),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
        issued_at: 1_764_547_200,
        engine: "wasmtime-48.0.8+0123456789abcdef".into(),
        signature: String::new(),
    }
    .sign(&key);
    write("task_wire", "receipt", receipt.to_json().as_bytes());
    let result = zerostate_market::wire::TaskResult {
        output: "AQID".into(),
        receipt,
        exit_code: 0,
        stderr: "d2FybmluZw==".into(),
        files: [("out.txt".to_owned(), "aGk=".to_owned())]
            .into_iter()
            .collect(),
        standing: Some(zerostate_market::wire::StandingOffer {
            price: 1,
            valid_ms: 1000,
        }),
    };
    write(
        "task_wire",
        "result",
        &serde_json::to_vec(&result).expect("a result encodes"),
    );

    // Say which text seeds decode as what they stand for.
    let text = |target: &str, name: &str| {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("corpus")
                .join(target)
                .join(name),
        )
        .expect("seed exists")
    };
    for name in ["seed-node.toml", "seed-collector.toml"] {
        if let Err(e) = toml::from_str::<zerostate_node::node_file::NodeFile>(&text("config", name))
        {
            eprintln!("seeds: config/{name}: {e}");
        }
    }
    if let Err(e) = serde_json::from_str::<zerostate_node::api::bodies::SubmitBody>(&text(
        "api_json",
        "seed-submit.json",
    )) {
        eprintln!("seeds: api_json/seed-submit.json: {e}");
    }
    for (name, ok) in [
        (
            "seed-request.json",
            serde_json::from_str::<zerostate_market::wire::TaskRequest>(&text(
                "task_wire",
                "seed-request.json",
            ))
            .err(),
        ),
        (
            "seed-offer.json",
            serde_json::from_str::<zerostate_market::wire::TaskOffer>(&text(
                "task_wire",
                "seed-offer.json",
            ))
            .err(),
        ),
    ] {
        if let Some(e) = ok {
            eprintln!("seeds: task_wire/{name}: {e}");
        }
    }
}
