//! AFL++ target `trace_context`: see `zerostate_fuzz::trace_context`.

fn main() {
    afl::fuzz!(|data: &[u8]| zerostate_fuzz::trace_context(data));
}
