//! Money: whole base units, never floats.

use std::fmt;
use std::str::FromStr;

/// Digits after the decimal point in the display form.
pub const DECIMALS: u32 = 9;
/// Base units in one displayed unit (10^9).
pub const UNIT: u64 = 1_000_000_000;

/// An amount of money in base units. Arithmetic is checked: it never wraps. It is shown
/// in base units, as the command line, the API and the logs show every amount; parsed from
/// the decimal form of whole units of 10^9 base units, which [`Amount::decimal`] writes.
///
/// ```
/// use zerostate_payment::Amount;
/// let a: Amount = "1.5".parse().expect("valid");
/// assert_eq!(a.base_units(), 1_500_000_000);
/// assert_eq!(a.to_string(), "1500000000");
/// assert_eq!(a.decimal(), "1.5");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(u64);

impl Amount {
    /// Nothing.
    pub const ZERO: Amount = Amount(0);

    /// An amount of `units` base units.
    pub const fn from_base_units(units: u64) -> Self {
        Self(units)
    }

    /// The amount in base units.
    pub const fn base_units(self) -> u64 {
        self.0
    }

    /// Whether the amount is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// `self + other`, or `None` on overflow.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    /// `self - other`, or `None` if it would go below zero.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }
}

impl Amount {
    /// The decimal form, in whole units of 10^9 base units: `1.5`, `0.000000044`.
    pub fn decimal(self) -> String {
        let whole = self.0 / UNIT;
        let frac = self.0 % UNIT;
        if frac == 0 {
            return whole.to_string();
        }
        let digits = format!("{frac:09}");
        format!("{whole}.{}", digits.trim_end_matches('0'))
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Why a decimal amount could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmountError {
    /// Nothing was given.
    #[error("an amount is empty")]
    Empty,
    /// Something other than digits and one `.`.
    #[error("amount {0:?} is not a decimal number (digits with at most one `.`)")]
    NotDecimal(String),
    /// More fractional digits than base units can hold.
    #[error("amount {0:?} has more than {DECIMALS} digits after the point")]
    TooPrecise(String),
    /// Larger than the largest amount.
    #[error(
        "amount {0:?} is too large (the largest is {max})",
        max = Amount(u64::MAX).decimal()
    )]
    TooLarge(String),
}

impl FromStr for Amount {
    type Err = AmountError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.is_empty() {
            return Err(AmountError::Empty);
        }
        let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
        let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
            return Err(AmountError::NotDecimal(s.to_owned()));
        }
        if frac.len() > DECIMALS as usize {
            return Err(AmountError::TooPrecise(s.to_owned()));
        }
        let too_large = || AmountError::TooLarge(s.to_owned());
        let whole: u64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| too_large())?
        };
        let frac_units: u64 = if frac.is_empty() {
            0
        } else {
            // At most 9 digits, so this fits.
            format!("{frac:0<9}")
                .parse()
                .map_err(|_| AmountError::NotDecimal(s.to_owned()))?
        };
        whole
            .checked_mul(UNIT)
            .and_then(|w| w.checked_add(frac_units))
            .map(Amount)
            .ok_or_else(too_large)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn parses_and_displays() {
        for (text, units, shown) in [
            ("0", 0, "0"),
            ("1", UNIT, "1"),
            ("0.000000001", 1, "0.000000001"),
            ("12.5", 12_500_000_000, "12.5"),
            (".25", 250_000_000, "0.25"),
            ("3.", 3 * UNIT, "3"),
        ] {
            let a: Amount = text.parse().expect(text);
            assert_eq!(a.base_units(), units, "{text}");
            assert_eq!(a.decimal(), shown, "{text}");
        }
    }

    #[test]
    fn rejects_what_is_not_an_amount() {
        assert_eq!("".parse::<Amount>(), Err(AmountError::Empty));
        assert!(matches!(
            "-1".parse::<Amount>(),
            Err(AmountError::NotDecimal(_))
        ));
        assert!(matches!(
            "1.2.3".parse::<Amount>(),
            Err(AmountError::NotDecimal(_))
        ));
        assert!(matches!(
            "1e9".parse::<Amount>(),
            Err(AmountError::NotDecimal(_))
        ));
        assert!(matches!(
            ".".parse::<Amount>(),
            Err(AmountError::NotDecimal(_))
        ));
        assert!(matches!(
            "0.0000000001".parse::<Amount>(),
            Err(AmountError::TooPrecise(_))
        ));
        assert!(matches!(
            "18446744074".parse::<Amount>(),
            Err(AmountError::TooLarge(_))
        ));
    }

    proptest! {
        #[test]
        fn display_round_trips(units in any::<u64>()) {
            let a = Amount::from_base_units(units);
            prop_assert_eq!(a.decimal().parse::<Amount>(), Ok(a));
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Amount>();
        }
    }
}
