//! A real anvil for a test: started from `PATH`, killed on drop; a missing anvil fails the
//! test under `CI=true`.

pub(crate) use zerostate_chain::{Anvil, DEV_KEY};

/// Starts anvil, or says why not: under `CI=true` a missing anvil fails the test.
pub(crate) async fn start(chain_id: u64) -> Option<Anvil> {
    if !zerostate_chain::anvil_for_tests() {
        return None;
    }
    Some(Anvil::start(chain_id, None).await.expect("start anvil"))
}
