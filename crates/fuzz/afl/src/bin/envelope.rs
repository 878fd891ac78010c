//! AFL++ target `envelope`: see `zerostate_fuzz::envelope`.

fn main() {
    afl::fuzz!(|data: &[u8]| zerostate_fuzz::envelope(data));
}
