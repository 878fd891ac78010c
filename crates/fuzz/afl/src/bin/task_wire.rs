//! AFL++ target `task_wire`: see `zerostate_fuzz::task_wire`.

fn main() {
    afl::fuzz!(|data: &[u8]| zerostate_fuzz::task_wire(data));
}
