//! AFL++ target `guild_wire`: see `zerostate_fuzz::guild_wire`.

fn main() {
    afl::fuzz!(|data: &[u8]| zerostate_fuzz::guild_wire(data));
}
