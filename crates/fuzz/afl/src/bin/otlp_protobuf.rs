//! AFL++ target `otlp_protobuf`: see `zerostate_fuzz::otlp_protobuf`.

fn main() {
    afl::fuzz!(|data: &[u8]| zerostate_fuzz::otlp_protobuf(data));
}
