//! Amounts in base units against wei.

use alloy::primitives::U256;
use zerostate_payment::Amount;

use crate::ChainError;

/// Wei in one base unit of [`Amount`] (one gwei: the amount's nine decimals and the coin's
/// eighteen).
pub const WEI_PER_UNIT: u64 = 1_000_000_000;

/// `amount` in wei.
pub fn to_wei(amount: Amount) -> U256 {
    U256::from(amount.base_units()) * U256::from(WEI_PER_UNIT)
}

/// Wei as an amount: refused unless it is a whole number of base units that fits.
pub fn from_wei(wei: U256) -> Result<Amount, ChainError> {
    let unit = U256::from(WEI_PER_UNIT);
    if wei % unit != U256::ZERO {
        return Err(ChainError::Amount(format!(
            "{wei} wei is not a whole number of base units (10^9 wei)"
        )));
    }
    let units: u64 = (wei / unit)
        .try_into()
        .map_err(|_| ChainError::Amount(format!("{wei} wei is more than an amount holds")))?;
    Ok(Amount::from_base_units(units))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_and_wei_round_trip_and_odd_wei_is_refused() {
        let amount: Amount = "1.5".parse().expect("amount");
        assert_eq!(to_wei(amount), U256::from(1_500_000_000_000_000_000u128));
        assert_eq!(from_wei(to_wei(amount)).expect("whole"), amount);
        assert!(from_wei(U256::from(1)).is_err());
        assert!(from_wei(U256::MAX - (U256::MAX % U256::from(WEI_PER_UNIT))).is_err());
        let most = Amount::from_base_units(u64::MAX);
        assert_eq!(from_wei(to_wei(most)).expect("fits"), most);
    }
}
