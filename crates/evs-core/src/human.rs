//! Durations and counts as a person reads them, in the one form every
//! message uses (the CLI re-exports [`human`] as `evs_cli::human`).

use std::time::Duration;

/// A duration as a person reads it: `850 µs`, `20 ms`, `1.5 s`, `3 min`,
/// `2.5 h` (one decimal, none when it is `.0`).
pub fn human(d: Duration) -> String {
    fn trimmed(value: f64, unit: &str) -> String {
        let text = format!("{value:.1}");
        let text = text.strip_suffix(".0").unwrap_or(&text);
        format!("{text} {unit}")
    }
    let secs = d.as_secs_f64();
    if d.is_zero() {
        "0 s".into()
    } else if d < Duration::from_millis(1) {
        format!("{} µs", d.as_micros())
    } else if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else if secs < 59.95 {
        trimmed(secs, "s")
    } else if secs < 3597.0 {
        trimmed(secs / 60.0, "min")
    } else {
        trimmed(secs / 3600.0, "h")
    }
}

/// `n` things, singular or plural: `plural(1, "attempt")` is `1 attempt`,
/// `plural(3, "attempt")` is `3 attempts`.
pub fn plural(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        for (d, text) in [
            (Duration::ZERO, "0 s"),
            (Duration::from_nanos(20), "0 µs"),
            (Duration::from_micros(850), "850 µs"),
            (Duration::from_millis(20), "20 ms"),
            (Duration::from_millis(999), "999 ms"),
            (Duration::from_millis(1000), "1 s"),
            (Duration::from_millis(1500), "1.5 s"),
            (Duration::from_millis(59_990), "1 min"),
            (Duration::from_secs(180), "3 min"),
            (Duration::from_secs(5400), "1.5 h"),
        ] {
            assert_eq!(human(d), text, "{d:?}");
        }
    }

    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(plural(0, "attempt"), "0 attempts");
        assert_eq!(plural(1, "attempt"), "1 attempt");
        assert_eq!(plural(2, "time"), "2 times");
    }
}
