//! AFL++ target `otlp_json`: see `zerostate_fuzz::otlp_json`.

fn main() {
    afl::fuzz!(|data: &[u8]| zerostate_fuzz::otlp_json(data));
}
