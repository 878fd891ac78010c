//! AFL++ target `payment_state`: see `zerostate_fuzz::payment_state`.

fn main() {
    afl::fuzz!(|data: &[u8]| zerostate_fuzz::payment_state(data));
}
