//! Who may use a node's HTTP API: the owner's token opens it, a foreign `Host` or `Origin`
//! is refused, and a data directory or key others can touch stops the node with the fix.

use zerostate_telemetry::testing::OtlpReceiver;

use crate::cluster::{NodeProcess, http};

/// One edge node exporting to a receiver of its own.
fn one_node() -> (tempfile::TempDir, OtlpReceiver, NodeProcess) {
    let dir = tempfile::tempdir().expect("tempdir");
    let receiver = OtlpReceiver::start();
    let node = NodeProcess::start(
        dir.path(),
        "edge-node",
        &["--listen", "/ip4/127.0.0.1/tcp/0"],
        &receiver.endpoint(),
    );
    (dir, receiver, node)
}

#[test]
fn the_api_opens_only_to_the_token_and_its_own_names() {
    let (dir, _receiver, node) = one_node();
    let host = node.api.trim_start_matches("http://").to_owned();
    let auth = format!("Bearer {}", node.token);
    let call = |method: &str, path: &str, headers: &[(&str, &str)]| {
        http(&node.api, method, path, Some(""), headers)
    };

    // The token was created readable by its owner only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("edge-node/api.token"))
            .expect("token file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Health is open; everything else needs the token.
    assert_eq!(call("GET", "/healthz", &[]).0, 200);
    let (status, body) = call("GET", "/v1/node", &[]);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("api.token") && !body.contains('\n'), "{body}");
    let (status, _) = call("GET", "/v1/node", &[("authorization", "Bearer wrong")]);
    assert_eq!(status, 401);
    // A cross-site form cannot dissolve a guild or publish.
    let (status, _) = call(
        "POST",
        "/v1/guilds/abc/dissolve",
        &[
            ("origin", "http://evil.example"),
            ("content-type", "application/x-www-form-urlencoded"),
        ],
    );
    assert_eq!(status, 403);
    let (status, _) = call("POST", "/v1/p2p/publish", &[]);
    assert_eq!(status, 401);
    let (status, body) = call("GET", "/v1/node", &[("authorization", &auth)]);
    assert_eq!(status, 200, "{body}");

    // DNS rebinding: the right token behind a foreign Host is still refused, and so is a
    // foreign Origin; the node's own names pass.
    let port = host.rsplit_once(':').expect("port").1;
    for (name, value, want) in [
        ("host", format!("evil.example:{port}"), 403),
        ("host", format!("localhost:{port}"), 200),
        ("origin", "http://evil.example".to_owned(), 403),
        ("origin", "null".to_owned(), 403),
        ("origin", format!("http://{host}"), 200),
        ("origin", format!("http://localhost:{port}"), 200),
    ] {
        let raw = raw_request(&host, name, &value, &auth);
        assert_eq!(raw, want, "{name}: {value}");
    }
}

#[test]
fn a_node_makes_its_settlement_key_once_and_shows_its_address_bound_to_its_peer_id() {
    let (dir, receiver, node) = one_node();
    let settlement = |node: &NodeProcess| {
        let (status, body) = node.get("/v1/node");
        assert_eq!(status, 200, "{body}");
        let info: serde_json::Value = serde_json::from_str(&body).expect("json");
        let address = info["settlement"]["address"].as_str().expect("an address");
        let binding = info["settlement"]["binding"].as_str().expect("a binding");
        let peer = node.peer_id.parse().expect("a peer id");
        let key = zerostate_payment_protocol::key_of(&peer).expect("an ed25519 peer id");
        // Signed by the node key over the address: a peer can check it is the node's.
        zerostate_chain::KeyBinding::checked(key, address, binding)
            .unwrap_or_else(|e| panic!("the binding does not hold: {e}"));
        (address.to_owned(), info["settlement"]["key_file"].clone())
    };
    let (address, file) = settlement(&node);
    assert!(
        address.starts_with("0x") && address.len() == 42,
        "{address}"
    );
    let path = dir.path().join("edge-node/settlement.key");
    assert_eq!(file, path.display().to_string());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .expect("key file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Made once: the node restarted on its data directory has the same account.
    crate::cluster::stop_cleanly(vec![node]);
    let again = NodeProcess::start(
        dir.path(),
        "edge-node",
        &["--listen", "/ip4/127.0.0.1/tcp/0"],
        &receiver.endpoint(),
    );
    assert_eq!(settlement(&again).0, address);
    crate::cluster::stop_cleanly(vec![again]);
}

/// A GET of /v1/node with `name: value` set (replacing Host when it is `host`); the status.
fn raw_request(addr: &str, name: &str, value: &str, auth: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let host = if name == "host" { value } else { addr };
    let extra = if name == "host" {
        String::new()
    } else {
        format!("{name}: {value}\r\n")
    };
    write!(
        s,
        "GET /v1/node HTTP/1.1\r\nhost: {host}\r\nauthorization: {auth}\r\n{extra}connection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read");
    response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status")
}

#[cfg(unix)]
#[test]
fn a_data_directory_or_key_others_can_touch_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("shared");
    std::fs::create_dir(&data).expect("mkdir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = crate::zerostate(&data, &["node", "--api", "127.0.0.1:0"], b"");
    assert!(!out.status.success());
    let err = crate::text(&out.stderr);
    assert!(err.contains("chmod go-w"), "{err}");

    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let key = data.join("node.key");
    std::fs::write(&key, format!("{}\n", "11".repeat(32))).expect("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = crate::zerostate(&data, &["node", "--api", "127.0.0.1:0"], b"");
    assert!(!out.status.success());
    let err = crate::text(&out.stderr);
    assert!(err.contains("chmod 600"), "{err}");
}

#[test]
fn slow_clients_cannot_exhaust_the_api() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let (_dir, _receiver, node) = one_node();
    let addr = node.api.trim_start_matches("http://").to_owned();
    // More clients than the API serves at once (256), each stalling inside its headers.
    let slow: Vec<std::net::TcpStream> = (0..300)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).expect("connect");
            s.write_all(b"GET /v1/node HTTP/1.1\r\nhost: 127.0.0.1\r\n")
                .expect("partial headers");
            s
        })
        .collect();
    let started = Instant::now();
    let (status, _) = http(&node.api, "GET", "/healthz", None, &[]);
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "an honest client waited {:?}",
        started.elapsed()
    );
    // The server closes every one of them (10 s to send headers).
    let deadline = Instant::now() + Duration::from_secs(40);
    for mut s in slow {
        s.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .expect("timeout");
        let mut rest = Vec::new();
        let held = matches!(
            s.read_to_end(&mut rest),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        );
        assert!(
            !held,
            "a connection that never finished its headers was kept open"
        );
    }
}

#[test]
fn every_route_is_one_server_span_named_by_its_template() {
    let (_dir, receiver, node) = one_node();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace}-00f067aa0ba902b7-01");
    let auth = format!("Bearer {}", node.token);
    let headers = [
        ("authorization", auth.as_str()),
        ("traceparent", traceparent.as_str()),
    ];
    // A read-only route continues the caller's trace too, and a template names the span.
    assert_eq!(
        http(&node.api, "GET", "/v1/p2p/peers", None, &headers).0,
        200
    );
    assert_eq!(
        http(
            &node.api,
            "GET",
            "/v1/guilds/0123456789abcdef",
            None,
            &headers
        )
        .0,
        404
    );
    let spans = crate::cluster::eventually("the API's server spans", || {
        let spans: Vec<_> = receiver
            .spans()
            .into_iter()
            .filter(|s| crate::cluster::hex(&s.span.trace_id) == trace)
            .collect();
        (spans.len() >= 2).then_some(spans)
    });
    let named = |name: &str| {
        spans
            .iter()
            .find(|s| s.span.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "no span {name}: {:?}",
                    spans.iter().map(|s| &s.span.name).collect::<Vec<_>>()
                )
            })
    };
    let peers = named("GET /v1/p2p/peers");
    assert_eq!(
        peers.attribute("http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        peers.attribute("http.route").as_deref(),
        Some("/v1/p2p/peers")
    );
    assert_eq!(
        peers.attribute("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        crate::cluster::hex(&peers.span.parent_span_id),
        "00f067aa0ba902b7"
    );
    let guild = named("GET /v1/guilds/{id}");
    assert_eq!(
        guild.attribute("http.route").as_deref(),
        Some("/v1/guilds/{id}")
    );
    assert_eq!(
        guild.attribute("http.response.status_code").as_deref(),
        Some("404")
    );
}

#[test]
fn a_guild_setting_out_of_range_stops_the_node_with_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "[guild]\nheartbeat_interval_ms = 0\n").expect("config");
    let out = crate::zerostate(
        &dir.path().join("data"),
        &[
            "node",
            "--config",
            config.to_str().expect("path"),
            "--api",
            "127.0.0.1:0",
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
        ],
        b"",
    );
    assert!(!out.status.success());
    let err = crate::text(&out.stderr);
    assert!(err.contains("heartbeat_interval_ms = 0"), "{err}");
}

#[test]
fn a_section_setting_comes_from_the_environment_or_set_and_a_wrong_one_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = |env: &[(&str, &str)], extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_zerostate"))
            .args(["node", "--api", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(extra)
            .envs(env.iter().copied())
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .output()
            .expect("zerostate runs");
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        crate::text(&out.stderr)
    };
    // [guild] from the environment: the node reads it (and refuses the value).
    let env = [("ZEROSTATE_GUILD_HEARTBEAT_INTERVAL_MS", "0")];
    let err = node(&env, &[]);
    assert!(err.contains("heartbeat_interval_ms = 0"), "{err}");
    // --set wins over the environment.
    let err = node(&env, &["--set", "guild.heartbeat_interval_ms=5"]);
    assert!(err.contains("heartbeat_interval_ms = 5"), "{err}");
    // A field no section has, named by where it came from.
    let err = node(&[], &["--set", "tasks.max_atempts=5"]);
    assert!(
        err.contains("--set \"tasks.max_atempts=5\"") && err.contains("max_atempts"),
        "{err}"
    );
    let err = node(&[("ZEROSTATE_PAYMENTS_DEPOSIT", "lots")], &[]);
    assert!(err.contains("ZEROSTATE_PAYMENTS_DEPOSIT"), "{err}");
}

/// A file that is not WebAssembly is refused where it enters — the upload, the
/// submission, `task submit` (exit 2) — with why, not sent to an executor to fail there;
/// a body that is not JSON is refused as `{"error": ...}` like every other error.
#[test]
fn a_module_that_is_not_webassembly_or_a_body_that_is_not_json_is_refused_where_it_enters() {
    let (dir, _receiver, node) = one_node();
    let auth = format!("Bearer {}", node.token);
    let headers = [("authorization", auth.as_str())];
    let (status, body) = http(&node.api, "POST", "/v1/modules", Some("not wasm"), &headers);
    assert_eq!(status, 400, "{body}");
    let error: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    let why = error["error"].as_str().expect("an error");
    assert!(why.contains("not one a node can run"), "{why}");
    // A valid module in text form is taken.
    let wat = "(module (func (export \"_start\")))";
    let (status, body) = http(&node.api, "POST", "/v1/modules", Some(wat), &headers);
    assert_eq!(status, 201, "{body}");
    // By its bytes in a submission.
    let submission = serde_json::json!({
        "guild": "g1",
        "module": { "base64": base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            b"\0asm\x01\0\0\0\x01\xff",
        ) },
    });
    let (status, body) = http(
        &node.api,
        "POST",
        "/v1/tasks",
        Some(&submission.to_string()),
        &headers,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("not one a node can run"), "{body}");
    // A body that is not JSON, or not the request's shape, or a query that is not one, is
    // refused with an error of the same shape as every other.
    for (method, path, body, want) in [
        ("POST", "/v1/tasks", "{not json", 400),
        ("POST", "/v1/tasks", "{\"modul\": 1}", 422),
        ("GET", "/v1/tasks?limit=many", "", 400),
    ] {
        let (status, answer) = http(&node.api, method, path, Some(body), &headers);
        assert_eq!(status, want, "{method} {path} {body}: {answer}");
        let error: serde_json::Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {answer}"));
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{answer}"
        );
    }
    // And through the command line.
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "these are notes, not a program\n").expect("notes");
    let api = if node.api.starts_with("http") {
        node.api.clone()
    } else {
        format!("http://{}", node.api)
    };
    let run = crate::zerostate(
        &dir.path().join(&node.name),
        &[
            "task",
            "submit",
            notes.to_str().expect("utf-8"),
            "--node",
            &api,
        ],
        b"",
    );
    let stderr = crate::text(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not one a node can run"), "{stderr}");
    crate::cluster::stop_cleanly(vec![node]);
}

/// Runs `zerostate` with `args` and only the `ZEROSTATE_*` variables of `env`: its exit
/// code, stdout and stderr.
fn zerostate_with(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let home = tempfile::tempdir().expect("home");
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_zerostate"));
    command
        .args(args)
        .current_dir(home.path())
        .env("HOME", home.path());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ZEROSTATE_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    let out = command.output().expect("zerostate runs");
    (
        out.status.code(),
        crate::text(&out.stdout),
        crate::text(&out.stderr),
    )
}

#[test]
fn a_node_is_reached_by_its_address_in_any_form_and_a_wrong_one_says_what_is_right() {
    let (dir, _receiver, node) = one_node();
    let data = dir.path().join("edge-node");
    let data = data.to_str().expect("utf-8");
    let host = node.api.trim_start_matches("http://").to_owned();
    for given in [
        host.clone(),
        format!("http://{host}"),
        format!("http://{host}/"),
    ] {
        let (code, stdout, stderr) = zerostate_with(
            &["channel", "list", "--node", &given, "--data-dir", data],
            &[],
        );
        assert_eq!(code, Some(0), "{given}: {stderr}");
        assert!(stdout.starts_with("channel "), "{given}: {stdout}");
        // The same in ZEROSTATE_API, and with --api and --data, the aliases.
        let (code, _, stderr) = zerostate_with(
            &["task", "list", "--data", data],
            &[("ZEROSTATE_API", given.as_str())],
        );
        assert_eq!(code, Some(0), "ZEROSTATE_API={given}: {stderr}");
        let (code, _, stderr) =
            zerostate_with(&["task", "list", "--api", &given, "--data-dir", data], &[]);
        assert_eq!(code, Some(0), "--api {given}: {stderr}");
    }
    // Not an address, and no devnet to find a node of that name in.
    for (given, says) in [
        ("127.0.0.1", "give host:port or http(s)://host:port"),
        ("ftp://127.0.0.1:21", "is not http:// or https://"),
        ("edge-node-1", "no devnet runs to name it in"),
    ] {
        let (code, _, stderr) =
            zerostate_with(&["task", "list", "--node", given, "--data-dir", data], &[]);
        assert_eq!(code, Some(2), "{given}: {stderr}");
        assert!(stderr.contains(says), "{given}: {stderr}");
    }
    let (code, _, stderr) = zerostate_with(
        &["task", "list", "--data-dir", data],
        &[("ZEROSTATE_API", "127.0.0.1")],
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("ZEROSTATE_API: \"127.0.0.1\" is not an address"),
        "{stderr}"
    );
    // A token from another data directory: the error names the file it read.
    let other = tempfile::tempdir().expect("other");
    std::fs::write(other.path().join("api.token"), "not-this-nodes-token\n").expect("token");
    let other_dir = other.path().to_str().expect("utf-8");
    let (code, _, stderr) = zerostate_with(
        &["task", "list", "--node", &host, "--data-dir", other_dir],
        &[],
    );
    assert_eq!(code, Some(2), "{stderr}");
    let file = other.path().join("api.token");
    assert!(
        stderr.contains(&format!(
            "refused the API token read from {}",
            file.display()
        )),
        "{stderr}"
    );
    // A node's own listener takes the same forms.
    let (code, _, stderr) = zerostate_with(&["node", "--api", "localhost:8700"], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("give IP:port or http://IP:port"),
        "{stderr}"
    );
}
