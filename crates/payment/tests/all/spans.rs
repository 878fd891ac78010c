//! The engine's spans, as the telemetry crate exports them.

use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use zerostate_payment::Settlement;
use zerostate_telemetry::names::{attr, span};
use zerostate_telemetry::{LogFormat, TelemetryBuilder, TelemetryConfig};

use crate::harness::{NOW, amount, ledger_with_channel, payee_key, stores};

fn has(spans: &[SpanData], name: &str, keys: &[&str]) {
    let s = spans.iter().find(|s| s.name == name).unwrap_or_else(|| {
        panic!(
            "no {name} among {:?}",
            spans.iter().map(|s| &s.name).collect::<Vec<_>>()
        )
    });
    for key in keys {
        assert!(
            s.attributes.iter().any(|kv| kv.key.as_str() == *key),
            "{name} lacks {key}"
        );
    }
}

#[test]
fn every_operation_leaves_its_span() {
    let exporter = InMemorySpanExporter::default();
    let mut config = TelemetryConfig::default();
    config.log_format = LogFormat::Off;
    let (dispatch, guard) = TelemetryBuilder::new(config)
        .with_exporter(exporter.clone())
        .build()
        .expect("telemetry");
    let dir = tempfile::tempdir().expect("tempdir");
    tracing::dispatcher::with_default(&dispatch, || {
        let (payer, payee, id) = stores(dir.path(), "10");
        let s = payer.pay(&id, amount("1"), [1; 32], NOW).expect("pay");
        payee.accept(&s, NOW).expect("accept");

        let (ledger, lid) = ledger_with_channel("10");
        let state = zerostate_payment::ChannelState {
            ledger: crate::harness::ledger_id(),
            channel: lid,
            nonce: 1,
            cumulative: amount("2"),
            receipt: [0; 32],
        }
        .sign(&crate::harness::payer_key());
        let ends = ledger
            .start_close(&crate::harness::payer_key().public(), &lid, None, NOW)
            .expect("start");
        ledger
            .dispute(&crate::harness::payee_key().public(), &state, NOW + 1)
            .expect("dispute");
        ledger
            .finalize(&crate::harness::payee_key().public(), &lid, ends)
            .expect("finalize");
        let _ = payee_key();
    });
    guard.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("spans");
    let ids = [attr::CHANNEL_ID];
    has(
        &spans,
        span::PAYMENT_TRANSACTION,
        &[attr::CHANNEL_ID, attr::PEER_ID, "amount", "nonce"],
    );
    has(
        &spans,
        span::PAYMENT_SIGNATURE_SIGN,
        &[attr::CHANNEL_ID, "nonce"],
    );
    has(
        &spans,
        span::PAYMENT_VERIFY,
        &[attr::CHANNEL_ID, attr::PEER_ID, "amount", "nonce"],
    );
    has(&spans, span::PAYMENT_CHANNEL_UPDATE, &ids);
    has(
        &spans,
        span::PAYMENT_CHANNEL_OPEN,
        &[attr::CHANNEL_ID, attr::PEER_ID, "amount"],
    );
    has(&spans, span::PAYMENT_CHANNEL_CLOSE, &ids);
    has(&spans, span::PAYMENT_DISPUTE, &[attr::CHANNEL_ID, "nonce"]);
    has(&spans, span::PAYMENT_SETTLEMENT, &ids);
    let sign = spans
        .iter()
        .find(|s| s.name == span::PAYMENT_SIGNATURE_SIGN)
        .expect("sign");
    let tx = spans
        .iter()
        .find(|s| s.name == span::PAYMENT_TRANSACTION)
        .expect("transaction");
    assert_eq!(
        sign.parent_span_id,
        tx.span_context.span_id(),
        "signing happens inside the transaction"
    );
}
