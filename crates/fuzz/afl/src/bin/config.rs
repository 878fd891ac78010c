//! AFL++ target `config`: see `zerostate_fuzz::config`.

fn main() {
    afl::fuzz!(|data: &[u8]| zerostate_fuzz::config(data));
}
