use super::*;

fn span(trace: u8, id: u8, parent: Option<u8>, name: &str) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        start_time_unix_nano: 1_000 + u64::from(id),
        end_time_unix_nano: 2_000 + u64::from(id),
        ..Default::default()
    }
}

fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![opentelemetry_proto::tonic::common::v1::KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn names(store: &Store, trace: u8) -> Vec<String> {
    let (data, _) = store.trace(&[trace; 16]).expect("read").expect("found");
    data.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .map(|s| s.name.clone())
        .collect()
}

#[test]
fn a_store_of_one_row_per_span_is_converted_keeping_every_span() {
    let dir = tempfile::tempdir().expect("dir");
    {
        // The layout of the earlier version, with two spans of one trace in it.
        let conn = Connection::open(dir.path().join("traces.db")).expect("open");
        conn.execute_batch(
            "CREATE TABLE resources (id INTEGER PRIMARY KEY, digest BLOB NOT NULL UNIQUE, \
             service TEXT NOT NULL, data BLOB NOT NULL);
             CREATE TABLE scopes (id INTEGER PRIMARY KEY, digest BLOB NOT NULL UNIQUE, \
             data BLOB NOT NULL);
             CREATE TABLE spans (trace_id BLOB NOT NULL, span_id BLOB NOT NULL, \
             parent_span_id BLOB NOT NULL, resource_id INTEGER NOT NULL, \
             scope_id INTEGER NOT NULL, service TEXT NOT NULL, name TEXT NOT NULL, \
             kind INTEGER NOT NULL, start_ns INTEGER NOT NULL, duration_ns INTEGER NOT NULL, \
             status INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (trace_id, span_id)) \
             WITHOUT ROWID;",
        )
        .expect("old schema");
        let resource = request("old-node", vec![]).resource_spans[0]
            .resource
            .clone()
            .expect("resource")
            .encode_to_vec();
        conn.execute(
            "INSERT INTO resources (id, digest, service, data) VALUES (1, x'01', 'old-node', ?1)",
            params![resource],
        )
        .expect("resource");
        conn.execute(
            "INSERT INTO scopes (id, digest, data) VALUES (1, x'02', x'')",
            [],
        )
        .expect("scope");
        for s in [span(7, 1, None, "root"), span(7, 2, Some(1), "child")] {
            conn.execute(
                "INSERT INTO spans VALUES (?1, ?2, ?3, 1, 1, 'old-node', ?4, 0, ?5, 1000, 0, ?6)",
                params![
                    s.trace_id,
                    s.span_id,
                    s.parent_span_id,
                    s.name,
                    s.start_time_unix_nano as i64,
                    s.encode_to_vec()
                ],
            )
            .expect("span");
        }
    }
    let store = Store::open(dir.path()).expect("converts");
    assert_eq!(names(&store, 7), ["root", "child"]);
    assert_eq!(store.span_count().expect("count"), 2);
    assert_eq!(store.services().expect("services"), ["old-node"]);
    let found = store
        .search(&TraceQuery {
            service: Some("old-node".into()),
            operation: Some("child".into()),
            ..Default::default()
        })
        .expect("search");
    assert_eq!(found, vec![vec![7u8; 16]]);
    let old: i64 = store
        .conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'spans'",
            [],
            |r| r.get(0),
        )
        .expect("schema");
    assert_eq!(old, 0, "the old table is gone");
    drop(store);
    // Opening again changes nothing.
    let store = Store::open(dir.path()).expect("reopens");
    assert_eq!(store.span_count().expect("count"), 2);
}

#[test]
fn spans_of_one_trace_written_apart_are_read_together_once_each() {
    let dir = tempfile::tempdir().expect("dir");
    let mut store = Store::open(dir.path()).expect("open");
    let first = request(
        "a",
        vec![span(9, 1, None, "root"), span(9, 2, Some(1), "a.work")],
    );
    let done = store.ingest(&first).expect("ingest");
    assert_eq!((done.stored, done.duplicates), (2, 0));
    // Sent again at once: nothing is written twice.
    let again = store.ingest(&first).expect("ingest");
    assert_eq!((again.stored, again.duplicates), (0, 2));
    store
        .ingest(&request("b", vec![span(9, 3, Some(2), "b.work")]))
        .expect("ingest");
    // A resend the writer no longer remembers is written, and read once.
    store.writer.recent.clear();
    store.writer.recent_order.clear();
    store.ingest(&first).expect("ingest");
    assert_eq!(names(&store, 9), ["root", "a.work", "b.work"]);
    assert_eq!(store.trace_span_count(&[9; 16]).expect("count"), 3);
    // Attributes of every type are found by their text.
    let mut typed = span(11, 1, None, "typed");
    typed.attributes = [
        ("n", any_value::Value::IntValue(3)),
        ("f", any_value::Value::DoubleValue(1.5)),
        ("b", any_value::Value::BoolValue(true)),
        ("raw", any_value::Value::BytesValue(vec![0xab, 0xcd])),
        ("s", any_value::Value::StringValue("text".into())),
    ]
    .into_iter()
    .map(|(k, v)| opentelemetry_proto::tonic::common::v1::KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    })
    .collect();
    store
        .ingest(&request("typed", vec![typed]))
        .expect("ingest");
    // Searches by service and operation, by caller, and by root.
    let q = |f: &dyn Fn(&mut TraceQuery)| {
        let mut q = TraceQuery::default();
        f(&mut q);
        store.search(&q).expect("search")
    };
    assert_eq!(q(&|q| q.service = Some("b".into())).len(), 1);
    assert!(q(&|q| q.operation = Some("nothing".into())).is_empty());
    assert_eq!(
        q(&|q| {
            q.service = Some("b".into());
            q.caller_service = Some("a".into());
        })
        .len(),
        1
    );
    assert!(
        q(&|q| {
            q.service = Some("b".into());
            q.caller_service = Some("b".into());
        })
        .is_empty()
    );
    assert_eq!(q(&|q| q.root_operation = Some("root".into())).len(), 1);
    assert!(q(&|q| q.root_operation = Some("a.work".into())).is_empty());
    for (k, v, found) in [
        ("n", "3", true),
        ("n", "4", false),
        ("f", "1.5", true),
        ("b", "true", true),
        ("raw", "abcd", true),
        ("s", "text", true),
        ("s", "other", false),
    ] {
        let hits = q(&|q| {
            q.attributes.insert(k.into(), v.into());
        });
        assert_eq!(hits.len(), usize::from(found), "{k}={v}");
    }
    let edges = store.edges(0).expect("edges");
    assert_eq!(edges.len(), 1);
    assert_eq!((edges[0].from.as_str(), edges[0].to.as_str()), ("a", "b"));
    let summary = &store.summaries(&[vec![9; 16]]).expect("summaries")[0];
    assert_eq!((summary.root.as_str(), summary.spans), ("root", 3));
    let ops = store.operations("a").expect("operations");
    assert_eq!(ops.len(), 2);
    // Retention removes everything (all spans started at 1 µs after the epoch).
    let gone = store
        .enforce_limits(10_000_000_000, Duration::from_secs(1), u64::MAX)
        .expect("retention");
    assert!(gone >= 3);
    assert!(store.trace(&[9; 16]).expect("read").is_none());
    assert!(store.services().expect("services").is_empty());
    assert!(store.operations("a").expect("operations").is_empty());
}

/// Every span of the trace as read back, by span id.
fn read_back(store: &Store, trace: &[u8]) -> Vec<Span> {
    let (data, _) = store.trace(trace).expect("read").expect("found");
    let mut spans: Vec<Span> = data
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect();
    spans.sort_by(|a, b| a.span_id.cmp(&b.span_id));
    spans
}

#[test]
fn a_lean_chunk_gives_back_every_span_as_sent_whatever_its_times() {
    let dir = tempfile::tempdir().expect("dir");
    let mut store = Store::open(dir.path()).expect("open");
    let mut sent = Vec::new();
    for (id, start, end) in [
        (1u8, 5_000u64, 9_000u64),
        // An end before the start, a start of zero, the largest times there are.
        (2, 8_000, 3_000),
        (3, 0, 1),
        (4, u64::MAX - 1, u64::MAX),
        (5, u64::MAX, 0),
    ] {
        let mut s = span(21, id, Some(1), "timed");
        s.start_time_unix_nano = start;
        s.end_time_unix_nano = end;
        sent.push(s);
    }
    // Two resources in one trace, one request.
    let mut req = request("first", sent[..2].to_vec());
    req.resource_spans
        .extend(request("second", sent[2..].to_vec()).resource_spans);
    assert_eq!(store.ingest(&req).expect("ingest").stored, 5);
    let stored: Vec<u8> = store
        .conn
        .query_row("SELECT data FROM chunks", [], |r| r.get(0))
        .expect("one chunk");
    assert!(store.chunk(&stored).expect("decodes").lean);
    assert_eq!(read_back(&store, &[21; 16]), sent);
}

/// A request of `traces` traces of ten spans each, spans and trace ids from `seed`.
fn traces(seed: u32, traces: u32) -> ExportTraceServiceRequest {
    let mut spans = Vec::new();
    for t in 0..traces {
        let mut trace_id = [0u8; 16];
        trace_id[..4].copy_from_slice(&seed.to_be_bytes());
        trace_id[4..8].copy_from_slice(&t.to_be_bytes());
        trace_id[15] = 1;
        for i in 0..10u32 {
            let mut span_id = [1u8; 8];
            span_id[..4].copy_from_slice(&(t * 10 + i).to_be_bytes());
            spans.push(Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                name: format!("stage.{}", i % 4),
                start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(seed * 1000 + i),
                end_time_unix_nano: 1_700_000_000_000_250_000 + u64::from(i),
                attributes: vec![opentelemetry_proto::tonic::common::v1::KeyValue {
                    key: "task.id".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!("{seed}-{t}"))),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            });
        }
    }
    request("many", spans)
}

fn dictionaries(store: &Store) -> Vec<(i64, i64)> {
    store
        .conn
        .prepare("SELECT id, last_chunk FROM dictionaries ORDER BY id")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

#[test]
fn a_dictionary_is_trained_on_the_stores_chunks_and_chunks_made_with_it_read_back() {
    let dir = tempfile::tempdir().expect("dir");
    let mut store = Store::open(dir.path()).expect("open");
    let mut seed = 0;
    while dictionaries(&store).is_empty() {
        seed += 1;
        assert!(seed < 100, "no dictionary after {seed} requests");
        store.ingest(&traces(seed, 20)).expect("ingest");
    }
    // Chunks made from now on use it, and say so.
    seed += 1;
    store.ingest(&traces(seed, 20)).expect("ingest");
    let last: Vec<u8> = store
        .conn
        .query_row("SELECT data FROM chunks ORDER BY id DESC", [], |r| r.get(0))
        .expect("a chunk");
    assert_eq!(last[0], prepare::DICTIONARY_MARK);
    let (id, last_chunk) = dictionaries(&store)[0];
    let newest: i64 = store
        .conn
        .query_row("SELECT MAX(id) FROM chunks", [], |r| r.get(0))
        .expect("max");
    assert_eq!((id, last_chunk), (1, newest));
    // A reader (another connection, as the query API has) decodes both kinds.
    drop(store);
    let reader = Store::reader(dir.path()).expect("reader");
    let mut first = [0u8; 16];
    first[..4].copy_from_slice(&1u32.to_be_bytes());
    first[15] = 1;
    let mut later = first;
    later[..4].copy_from_slice(&seed.to_be_bytes());
    for trace in [first, later] {
        let spans = read_back(&reader, &trace);
        assert_eq!(spans.len(), 10);
        assert!(spans.iter().all(|s| s.trace_id == trace));
    }
    let found = reader
        .search(&TraceQuery {
            service: Some("many".into()),
            operation: Some("stage.3".into()),
            limit: 1000,
            ..Default::default()
        })
        .expect("search");
    assert_eq!(found.len(), seed as usize * 20);
}

#[test]
fn a_span_sent_twice_within_one_group_commit_is_stored_once_and_its_neighbours_kept() {
    let dir = tempfile::tempdir().expect("dir");
    let mut store = Store::open(dir.path()).expect("open");
    let preparer = store.preparer().expect("writer");
    let a = request(
        "a",
        vec![span(31, 1, None, "root"), span(31, 2, Some(1), "one")],
    );
    let b = request(
        "a",
        vec![span(31, 2, Some(1), "one"), span(31, 3, Some(1), "two")],
    );
    let done = store
        .write(vec![prepare(&preparer, &a), prepare(&preparer, &b)])
        .expect("write");
    assert_eq!(
        done.iter()
            .map(|d| (d.stored, d.duplicates))
            .collect::<Vec<_>>(),
        [(2, 0), (1, 1)]
    );
    let names: Vec<String> = read_back(&store, &[31; 16])
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, ["root", "one", "two"]);
    assert_eq!(store.span_count().expect("count"), 3);
}

#[test]
fn a_dictionary_retention_deleted_comes_back_with_a_chunk_made_with_it() {
    let dir = tempfile::tempdir().expect("dir");
    let mut store = Store::open(dir.path()).expect("open");
    let preparer = store.preparer().expect("writer");
    let mut seed = 0;
    while dictionaries(&store).is_empty() {
        seed += 1;
        store.ingest(&traces(seed, 20)).expect("ingest");
    }
    // A request prepared with the first dictionary, still on its way...
    let late = prepare(&preparer, &traces(500, 2));
    // ...while a second is made and retention deletes every chunk and the first.
    let second = store.add_dictionary(vec![0; 64]).expect("second");
    preparer.set_dictionary(second);
    let gone = store
        .enforce_limits(u64::MAX / 2, Duration::from_secs(1), u64::MAX)
        .expect("retention");
    assert!(gone > 0);
    assert_eq!(dictionaries(&store), [(2, 0)]);
    assert_eq!(store.write(vec![late]).expect("write")[0].stored, 20);
    assert_eq!(dictionaries(&store).len(), 2, "the first is back");
    let mut trace = [0u8; 16];
    trace[..4].copy_from_slice(&500u32.to_be_bytes());
    trace[15] = 1;
    assert_eq!(read_back(&store, &trace).len(), 10);
}

#[test]
fn a_store_with_one_posting_per_chunk_is_converted_to_runs() {
    let dir = tempfile::tempdir().expect("dir");
    {
        let mut store = Store::open(dir.path()).expect("open");
        store.ingest(&traces(1, 5)).expect("ingest");
        store
            .ingest(&request("other", vec![span(41, 1, None, "lone")]))
            .expect("ingest");
        // The layout before runs: a posting per chunk and term.
        store
            .conn
            .execute_batch(
                "CREATE TABLE postings (term_id INTEGER NOT NULL, chunk_id INTEGER NOT NULL, \
                 PRIMARY KEY (term_id, chunk_id)) WITHOUT ROWID;
                 INSERT INTO postings SELECT r.term_id, c.id FROM runs r \
                 JOIN chunks c ON c.id BETWEEN r.first_chunk AND r.last_chunk;
                 DELETE FROM runs;",
            )
            .expect("old layout");
    }
    let store = Store::open(dir.path()).expect("converts");
    let runs: i64 = store
        .conn
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .expect("runs");
    assert!(runs > 0);
    let search = |service: &str, operation: &str| {
        store
            .search(&TraceQuery {
                service: Some(service.into()),
                operation: Some(operation.into()),
                ..Default::default()
            })
            .expect("search")
    };
    assert_eq!(search("many", "stage.2").len(), 5);
    assert_eq!(search("other", "lone"), [vec![41u8; 16]]);
    assert!(search("other", "stage.2").is_empty());
    assert_eq!(store.services().expect("services"), ["many", "other"]);
}

#[test]
fn a_run_goes_with_the_last_of_its_chunks() {
    let dir = tempfile::tempdir().expect("dir");
    let mut store = Store::open(dir.path()).expect("open");
    store.ingest(&traces(1, 5)).expect("ingest");
    let runs = |store: &Store| -> i64 {
        store
            .conn
            .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
            .expect("runs")
    };
    let before = runs(&store);
    let found = |store: &Store| {
        store
            .search(&TraceQuery {
                service: Some("many".into()),
                ..Default::default()
            })
            .expect("search")
            .len()
    };
    assert_eq!(found(&store), 5);
    let oldest = "SELECT id, spans, terms FROM chunks ORDER BY id LIMIT ?1";
    assert_eq!(store.delete_chunks(oldest, 2).expect("delete"), 20);
    assert_eq!((runs(&store), found(&store)), (before, 3));
    assert_eq!(store.delete_chunks(oldest, 3).expect("delete"), 30);
    assert_eq!((runs(&store), found(&store)), (0, 0));
}

#[test]
fn two_stores_on_one_thread_each_compress_with_their_own_dictionary() {
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    let mut stores = dirs
        .each_ref()
        .map(|d| Store::open(d.path()).expect("open"));
    // Each trains its dictionary 1 on different spans.
    for (n, store) in stores.iter_mut().enumerate() {
        let mut seed = n as u32 * 1000;
        while dictionaries(store).is_empty() {
            seed += 1;
            let mut req = traces(seed, 20);
            for s in req.resource_spans[0].scope_spans[0].spans.iter_mut() {
                s.name = format!("store{n}.{}", s.name);
            }
            store.ingest(&req).expect("ingest");
        }
    }
    // Alternately, on this one thread.
    for round in 0..3u32 {
        for (n, store) in stores.iter_mut().enumerate() {
            let seed = 5000 + round * 10 + n as u32;
            store.ingest(&traces(seed, 2)).expect("ingest");
            let mut trace = [0u8; 16];
            trace[..4].copy_from_slice(&seed.to_be_bytes());
            trace[15] = 1;
            assert_eq!(
                read_back(store, &trace).len(),
                10,
                "store {n}, round {round}"
            );
        }
    }
}

/// A request prepared as the receiver prepares it.
fn prepare(preparer: &Preparer, request: &ExportTraceServiceRequest) -> Prepared {
    let bytes = request.encode_to_vec();
    let checked = crate::estimate::protobuf(&bytes).expect("a well-formed request");
    preparer.prepare(checked).expect("prepare")
}

#[test]
fn a_span_read_in_place_reads_back_as_the_decoder_reads_it() {
    let dir = tempfile::tempdir().expect("dir");
    let mut store = Store::open(dir.path()).expect("open");
    let mut s = span(41, 1, None, "first name");
    s.attributes = vec![opentelemetry_proto::tonic::common::v1::KeyValue {
        key: "k".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(-7)),
        }),
        ..Default::default()
    }];
    let encoded = s.encode_to_vec();
    // Times first, then the span as an exporter encodes it, then a field the schema does
    // not have, and the name again (the last one counts).
    let mut raw = vec![0x39];
    raw.extend_from_slice(&5u64.to_le_bytes());
    raw.push(0x41);
    raw.extend_from_slice(&9u64.to_le_bytes());
    raw.extend_from_slice(&encoded);
    raw.extend_from_slice(&[0xa0, 0x01, 0x05]);
    raw.extend_from_slice(&[0x2a, 0x06]);
    raw.extend_from_slice(b"second");
    let expected = Span::decode(&raw[..]).expect("the decoder takes it");
    assert_eq!(expected.name, "second");
    let mut scope_spans = vec![0x12];
    prost::encoding::encode_varint(raw.len() as u64, &mut scope_spans);
    scope_spans.extend_from_slice(&raw);
    let mut resource_spans = vec![0x12];
    prost::encoding::encode_varint(scope_spans.len() as u64, &mut resource_spans);
    resource_spans.extend_from_slice(&scope_spans);
    let mut body = vec![0x0a];
    prost::encoding::encode_varint(resource_spans.len() as u64, &mut body);
    body.extend_from_slice(&resource_spans);
    assert_eq!(store.ingest_export(&body).expect("stored").stored, 1);
    assert_eq!(read_back(&store, &[41; 16]), vec![expected]);
    let stored: Vec<u8> = store
        .conn
        .query_row("SELECT data FROM chunks", [], |r| r.get(0))
        .expect("one chunk");
    let chunk = store.chunk(&stored).expect("decodes");
    let kept = &chunk.groups[0].spans[0];
    assert!(
        !kept.windows(3).any(|w| w == [0xa0, 0x01, 0x05]),
        "the unknown field is left out"
    );
    assert!(
        kept.len() < raw.len() - 16 - 18,
        "ids of the trace and times left out"
    );
}

#[test]
fn a_body_that_does_not_decode_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().expect("dir");
    let mut store = Store::open(dir.path()).expect("open");
    let mut body = request("a", vec![span(42, 1, None, "ok")]).encode_to_vec();
    // The span's name made invalid UTF-8.
    let at = body
        .windows(4)
        .position(|w| w == [0x2a, 0x02, b'o', b'k'])
        .expect("the name is in the body");
    body[at + 3] = 0xff;
    assert!(matches!(
        store.ingest_export(&body),
        Err(StoreError::Malformed(_))
    ));
    let chunks: i64 = store
        .conn
        .query_row("SELECT count(*) FROM chunks", [], |r| r.get(0))
        .expect("count");
    assert_eq!(chunks, 0);
}

#[test]
fn a_mangled_body_the_check_takes_is_stored_as_the_decoder_reads_it() {
    let body = traces(7, 2).encode_to_vec();
    // The same mangled bodies every run.
    let mut next = crate::estimate::xorshift(0x2545_f491_4f6c_dd1d);
    let mut stored = 0;
    for _ in 0..400 {
        let mut b = body.clone();
        let at = (next() % b.len() as u64) as usize;
        b[at] = next() as u8;
        if crate::estimate::protobuf(&b).is_err() {
            continue;
        }
        let decoded = ExportTraceServiceRequest::decode(&b[..]).expect("the check agrees");
        let dir = tempfile::tempdir().expect("dir");
        let mut store = Store::open(dir.path()).expect("open");
        store
            .ingest_export(&b)
            .expect("a body the check takes is stored");
        let mut seen = HashSet::new();
        for span in decoded
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .filter(|s| valid_ids(s))
        {
            // The first copy of a span id sent twice is the one kept.
            if !seen.insert((span.trace_id.clone(), span.span_id.clone())) {
                continue;
            }
            let back = read_back(&store, &span.trace_id);
            assert!(back.contains(span), "{span:?} not in {back:?}");
            stored += 1;
        }
    }
    assert!(stored > 1000, "{stored} spans compared");
}
