//! Kubernetes resource quantities (`500m`, `1.5`, `128Mi`, `1e3`) as
//! integers of thousandths, for capacity arithmetic. k8s-openapi keeps a
//! `Quantity` as its string, so this parses the apimachinery grammar:
//!
//! ```text
//! quantity ::= sign? number suffix
//! number   ::= digits | digits "." digits? | "." digits
//! suffix   ::= "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E"
//!            | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei"
//!            | ("e" | "E") sign? digits
//! ```

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// The largest decimal exponent accepted (a quantity past 10^30 is no
/// real request and would overflow the arithmetic).
const MAX_EXPONENT: i32 = 30;
/// The most digits accepted in a number.
const MAX_DIGITS: usize = 30;

/// Parses a quantity into thousandths of its unit (millicores for CPU,
/// thousandths of a byte for memory), rounding up as Kubernetes does for
/// `MilliValue()`: `0.1m` is 1.
pub fn parse_milli(text: &str) -> Result<i128, String> {
    let fail = |why: &str| format!("quantity {text:?}: {why}");
    let trimmed = text.trim();
    let (negative, rest) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    if whole.is_empty() && fraction.is_empty() {
        return Err(fail("expected a number"));
    }
    if fraction.contains('.') {
        return Err(fail("more than one decimal point"));
    }
    let digits = format!("{whole}{fraction}");
    let significant = digits.trim_start_matches('0');
    if significant.len() > MAX_DIGITS {
        return Err(fail("too many digits"));
    }
    let mantissa: i128 = if significant.is_empty() {
        0
    } else {
        significant.parse().map_err(|_| fail("expected a number"))?
    };
    // value = mantissa / 10^fraction_len * multiplier; thousandths = value * 1000.
    let fraction_len = i32::try_from(fraction.len()).map_err(|_| fail("too many digits"))?;
    let (binary_shift, decimal_exponent): (u32, i32) = match suffix {
        "" => (0, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        exponent if exponent.starts_with(['e', 'E']) => {
            let e = &exponent[1..];
            let valid = e.strip_prefix(['+', '-']).unwrap_or(e);
            if valid.is_empty() || !valid.bytes().all(|b| b.is_ascii_digit()) {
                return Err(fail("unknown suffix"));
            }
            let e: i32 = e.parse().map_err(|_| fail("exponent out of range"))?;
            if e.abs() > MAX_EXPONENT {
                return Err(fail("exponent out of range"));
            }
            (0, e)
        }
        _ => {
            return Err(fail(
                "unknown suffix; use n, u, m, k, M, G, T, P, E, Ki, Mi, Gi, Ti, Pi, Ei or an exponent",
            ));
        }
    };
    let scale = decimal_exponent + 3 - fraction_len;
    let too_large = || fail("too large");
    let mut numerator = mantissa
        .checked_mul(1i128 << binary_shift)
        .ok_or_else(too_large)?;
    let mut denominator: i128 = 1;
    if scale >= 0 {
        numerator = numerator
            .checked_mul(
                10i128
                    .checked_pow(scale.unsigned_abs())
                    .ok_or_else(too_large)?,
            )
            .ok_or_else(too_large)?;
    } else {
        denominator = 10i128
            .checked_pow(scale.unsigned_abs())
            .ok_or_else(|| fail("too many decimal places"))?;
    }
    // Round up in magnitude for positive values, as MilliValue does.
    let milli = numerator / denominator + i128::from(numerator % denominator != 0);
    Ok(if negative { -milli } else { milli })
}

/// Parses a `Quantity` into thousandths (see [`parse_milli`]).
pub fn quantity_milli(quantity: &Quantity) -> Result<i128, String> {
    parse_milli(&quantity.0)
}

/// Thousandths as a readable amount: CPU as millicores or cores, memory in
/// the largest binary unit that divides it, other counts as numbers.
pub fn format_milli(resource: &str, milli: i128) -> String {
    if resource.ends_with("cpu") {
        return if milli % 1000 == 0 {
            (milli / 1000).to_string()
        } else {
            format!("{milli}m")
        };
    }
    if resource.ends_with("memory") || resource.ends_with("storage") {
        let bytes = milli.div_euclid(1000) + i128::from(milli.rem_euclid(1000) != 0);
        for (unit, shift) in [("Gi", 30), ("Mi", 20), ("Ki", 10)] {
            if bytes != 0 && bytes % (1i128 << shift) == 0 {
                return format!("{}{unit}", bytes >> shift);
            }
        }
        return bytes.to_string();
    }
    if milli % 1000 == 0 {
        (milli / 1000).to_string()
    } else {
        format!("{milli}m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_common_forms() {
        for (text, milli) in [
            ("500m", 500),
            ("1", 1000),
            ("1.5", 1500),
            ("0.1", 100),
            (".5", 500),
            ("2.", 2000),
            ("+2", 2000),
            ("-250m", -250),
            ("0", 0),
            ("100n", 1),
            ("1u", 1),
            ("1000000n", 1),
            ("1k", 1_000_000),
            ("128Mi", 128 * 1024 * 1024 * 1000),
            ("1Gi", 1_073_741_824_000),
            ("1.5Gi", 1_610_612_736_000),
            ("1G", 1_000_000_000_000),
            ("1e3", 1_000_000),
            ("1E-3", 1),
            ("12e+2", 1_200_000),
            ("1Ei", (1i128 << 60) * 1000),
        ] {
            assert_eq!(parse_milli(text), Ok(milli), "{text}");
        }
    }

    #[test]
    fn rounds_fractions_of_a_thousandth_up() {
        assert_eq!(parse_milli("0.1m"), Ok(1));
        assert_eq!(parse_milli("1.0001"), Ok(1001));
        assert_eq!(parse_milli("1n"), Ok(1));
        assert_eq!(parse_milli("0.0000m"), Ok(0));
    }

    #[test]
    fn rejects_what_kubernetes_rejects() {
        for text in [
            "", "m", "1.2.3", "1x", "1 Gi", "1mi", "1e", "1e+", "abc", "--1", "1e99", "1Gi5",
        ] {
            assert!(parse_milli(text).is_err(), "{text:?}");
        }
        let err = parse_milli("2Gb").unwrap_err();
        assert!(err.starts_with("quantity \"2Gb\": unknown suffix"), "{err}");
        assert!(parse_milli(&"9".repeat(40)).is_err());
    }

    #[test]
    fn formats_for_messages() {
        assert_eq!(format_milli("requests.cpu", 1500), "1500m");
        assert_eq!(format_milli("cpu", 2000), "2");
        assert_eq!(format_milli("memory", 256 * 1024 * 1024 * 1000), "256Mi");
        assert_eq!(format_milli("requests.memory", 1_000_000), "1000");
        assert_eq!(format_milli("pods", 3000), "3");
    }

    proptest! {
        /// Whole numbers with a decimal or binary suffix scale exactly.
        #[test]
        fn suffixes_scale(n in 0i64..1_000_000, idx in 0usize..9) {
            let (suffix, factor): (&str, i128) = [
                ("", 1000), ("k", 1_000_000), ("M", 1_000_000_000), ("G", 1_000_000_000_000),
                ("Ki", 1024 * 1000), ("Mi", (1 << 20) * 1000), ("Gi", (1 << 30) * 1000),
                ("m", 1), ("e3", 1_000_000),
            ][idx];
            prop_assert_eq!(parse_milli(&format!("{n}{suffix}")), Ok(i128::from(n) * factor));
        }

        /// `a.b` equals `ab` thousandths when b has three digits.
        #[test]
        fn decimals_are_thousandths(whole in 0u32..100_000, frac in 0u32..1000) {
            prop_assert_eq!(
                parse_milli(&format!("{whole}.{frac:03}")),
                Ok(i128::from(whole) * 1000 + i128::from(frac))
            );
            prop_assert_eq!(parse_milli(&format!("{whole}{frac:03}m")), parse_milli(&format!("{whole}.{frac:03}")));
        }

        #[test]
        fn never_panics(text in ".{0,40}") {
            let _ = parse_milli(&text);
        }
    }
}
