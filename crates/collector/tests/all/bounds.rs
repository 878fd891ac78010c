//! What a hostile client cannot do: hold connections open, decode a small body into
//! gigabytes, or make one query stall the others or break on extreme times.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use prost::Message;
use zerostate_collector::Store;

use crate::harness::{collector, get, gzip, post, request, span};

const PB: &str = "application/x-protobuf";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_connections_are_closed_and_an_honest_client_is_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path(), |cfg| {
        cfg.max_connections = 8;
        cfg.header_read_timeout_ms = 500;
        cfg.idle_timeout_ms = 1_000;
    })
    .await;
    // Twenty clients that start a request and never finish its headers, more than the
    // listener serves at once.
    let addr = c.otlp_addr;
    let slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .expect("partial headers");
            s
        })
        .collect();
    let started = Instant::now();
    let body = request("honest", vec![span(90, 1, 0, "served", 0, 1)]).encode_to_vec();
    let status = post(&c, PB, false, body).await.status();
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the honest request waited {:?}",
        started.elapsed()
    );
    // Every slow connection is closed by the server.
    let deadline = Instant::now() + Duration::from_secs(20);
    for mut s in slow {
        s.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now())))
            .expect("timeout");
        let mut rest = Vec::new();
        // End of stream or a reset: closed. A timeout: still held open.
        let closed = !matches!(
            s.read_to_end(&mut rest),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        );
        assert!(
            closed,
            "a connection that sent no complete headers was kept open"
        );
    }
    c.shutdown().await;
}

/// `(tag, length, contents)` of a protobuf length-delimited field.
fn field(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let mut n = contents.len() as u64;
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(contents);
    out
}

/// An export request of one span with `n` empty attributes: two bytes each on the wire,
/// a struct of tens of bytes each once decoded.
fn empty_attributes(n: usize) -> Vec<u8> {
    let mut span = field(0x0a, &[1; 16]); // trace_id
    span.extend(field(0x12, &[2; 8])); // span_id
    span.extend(std::iter::repeat_n([0x4a, 0x00], n).flatten()); // attributes (field 9)
    let scope_spans = field(0x12, &span); // ScopeSpans.spans (field 2)
    let resource_spans = field(0x12, &scope_spans); // ResourceSpans.scope_spans (field 2)
    field(0x0a, &resource_spans) // ExportTraceServiceRequest.resource_spans (field 1)
}

const CHILD_ENV: &str = "ZEROSTATE_COLLECTOR_BOUNDS_CHILD";

/// Peak resident memory of a process, bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib * 1024
}

/// Runs a collector in this process for the decode-bomb test when asked to (a child
/// process, so that its memory is measured alone); otherwise does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decode_bomb_child() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let c = collector(std::path::Path::new(&dir), |_| {}).await;
    println!("OTLP {}", c.otlp_addr);
    // Until the parent kills it.
    tokio::time::sleep(Duration::from_secs(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decode_bomb_is_refused_and_memory_stays_bounded() {
    const BOUND: u64 = 768 << 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "bounds::decode_bomb_child", "--nocapture"])
        .env(CHILD_ENV, dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("child collector");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the child reports its address")
            .expect("line");
        if let Some(a) = line.strip_prefix("OTLP ") {
            break a.to_owned();
        }
    };
    // Ten million empty attributes: 20 MiB raw (under the 64 MiB body bound), some 20 KiB
    // gzipped, most of a gigabyte each once decoded.
    let bomb = gzip(&empty_attributes(10_000_000));
    assert!(bomb.len() < 256 << 10, "{}", bomb.len());
    let url = format!("http://{addr}/v1/traces");
    let client = reqwest::Client::new();
    let send = |body: Vec<u8>| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let r = client
                .post(url)
                .header("content-type", PB)
                .header("content-encoding", "gzip")
                .body(body)
                .send()
                .await
                .expect("post");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    let bombs: Vec<_> = (0..4).map(|_| tokio::spawn(send(bomb.clone()))).collect();
    // An honest exporter keeps being served meanwhile.
    for i in 0..5u8 {
        let body = request("honest", vec![span(100 + i, 1, 0, "ok", 0, 1)]).encode_to_vec();
        let (status, text) = send(gzip(&body)).await;
        assert_eq!(status, 200, "{text}");
    }
    for b in bombs {
        let (status, text) = b.await.expect("bomb");
        assert_eq!(status, 413, "{text}");
        assert!(text.contains("memory"), "{text}");
    }
    let peak = peak_rss(child.id());
    eprintln!(
        "decode bombs: the collector's peak resident memory was {} MiB",
        peak >> 20
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        peak < BOUND,
        "the collector's peak memory was {} MiB (bound {} MiB)",
        peak >> 20,
        BOUND >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_answer_is_capped_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path(), |_| {}).await;
    let spans: Vec<_> = (0..12_000u32)
        .map(|i| {
            let mut s = span(95, 1, 0, "many", u64::from(i), 1);
            s.span_id = [&[9u8; 4][..], &(i + 1).to_be_bytes()].concat();
            s
        })
        .collect();
    let body = gzip(&request("svc", spans).encode_to_vec());
    assert_eq!(post(&c, PB, true, body).await.status(), 200);
    let (status, v) = get(&c, &format!("/api/v3/traces/{}", hex::encode([95u8; 16]))).await;
    assert_eq!(status, 200);
    assert_eq!(v["totalSpans"], 12_000);
    assert_eq!(v["truncated"], true);
    let returned: usize = v["result"]["resourceSpans"]
        .as_array()
        .expect("resource spans")
        .iter()
        .flat_map(|r| r["scopeSpans"].as_array().expect("scope spans"))
        .map(|s| s["spans"].as_array().expect("spans").len())
        .sum();
    assert_eq!(returned, 10_000);
    // A search asking for more traces than allowed is capped, not refused.
    let (status, _) = get(
        &c,
        "/api/v3/traces?query.serviceName=svc&query.searchDepth=100000",
    )
    .await;
    assert_eq!(status, 200);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_times_do_not_break_search_nor_outlive_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path(), |_| {}).await;
    let mut far = span(96, 1, 0, "far future", 0, 1);
    far.start_time_unix_nano = u64::MAX - 10;
    far.end_time_unix_nano = u64::MAX;
    let mut long = span(96, 2, 1, "longest", 0, 1);
    long.end_time_unix_nano = u64::MAX;
    let body = request("svc", vec![far, long]).encode_to_vec();
    assert_eq!(post(&c, PB, false, body).await.status(), 200);
    let (status, v) = get(&c, "/api/zerostate/traces?query.serviceName=svc").await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = get(&c, &format!("/api/v3/traces/{}", hex::encode([96u8; 16]))).await;
    assert_eq!(status, 200, "{v}");
    c.shutdown().await;

    // A week and a day from now, a week's retention removes both.
    let mut store = Store::open(dir.path()).expect("open");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let later = now + 8 * 24 * 3600 * 1_000_000_000;
    let removed = store
        .enforce_limits(later, Duration::from_secs(7 * 24 * 3600), u64::MAX)
        .expect("enforce");
    assert_eq!(removed, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heavy_query_does_not_stall_a_light_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = collector(dir.path(), |_| {}).await;
    // Many spans that an attribute search must decode one by one.
    for batch in 0..4u32 {
        let spans: Vec<_> = (0..50_000u32)
            .map(|i| {
                let mut s = span(97, 1, 0, "scan me", 0, 1);
                s.trace_id = [&batch.to_be_bytes()[..], &[7u8; 8], &i.to_be_bytes()].concat();
                s
            })
            .collect();
        let body = gzip(&request("heavy", spans).encode_to_vec());
        assert_eq!(post(&c, PB, true, body).await.status(), 200);
    }
    let base = format!("http://{}", c.ui_addr);
    let heavy = tokio::spawn({
        let url = format!(
            "{base}/api/v3/traces?query.serviceName=heavy&query.attributes=%7B%22no%22%3A%22match%22%7D"
        );
        async move {
            let _ = reqwest::get(url).await.expect("heavy");
            Instant::now()
        }
    });
    // Let the heavy query start first.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let light = reqwest::get(format!("{base}/api/v3/services"))
        .await
        .expect("light");
    let light_done = Instant::now();
    assert_eq!(light.status(), 200);
    let heavy_done = heavy.await.expect("heavy");
    eprintln!(
        "light query answered {:?} before the heavy one",
        heavy_done.saturating_duration_since(light_done)
    );
    assert!(
        light_done < heavy_done,
        "the light query waited for the heavy one"
    );
    c.shutdown().await;
}
