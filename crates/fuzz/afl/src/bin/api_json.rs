//! AFL++ target `api_json`: see `zerostate_fuzz::api_json`.

fn main() {
    afl::fuzz!(|data: &[u8]| zerostate_fuzz::api_json(data));
}
