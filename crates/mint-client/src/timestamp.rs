//! Mint's timestamps, kept as sent and validated before use.
//!
//! Why not `DateTime<Utc>` fields: one unparseable `finishedAt` would make the whole instance (and
//! the whole page of a list) undecodable, and a value that *does* parse can still be absurd.
//! `0001-01-01T00:00:00Z` (.NET's `DateTime.MinValue`) would mark an instance as ended two thousand
//! years ago, and `+262142-12-31T00:00:00Z` sits at the end of chrono's range, where `t + 30 days`
//! panics. So a [`Timestamp`] always decodes, keeps the raw text, and hands out a `DateTime` for
//! arithmetic only through [`Timestamp::plausible`], which checks it against the caller's own clock.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How far Mint's clock may be from ours before a timestamp counts as implausible
/// ([`Timestamp::plausible`]): 5 minutes, generous for NTP-synchronised servers and small next to
/// the intervals mintgate works with (30-second polls, 30-day retention).
pub const CLOCK_SKEW_MAX: Duration = Duration::from_secs(5 * 60);

/// A timestamp from a Mint answer: the text as Mint sent it, and its value when it parses.
///
/// It always decodes: a string that is no date, a number, or a date at the edge of the calendar is
/// kept (see [`Timestamp::raw`]) with [`Timestamp::parsed`] `None` or an absurd value. Use
/// [`Timestamp::plausible`] before any arithmetic; when it says `None`, use your own observation
/// time (when you saw the state change) instead, and log the raw text once.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Timestamp {
    raw: String,
    parsed: Option<DateTime<Utc>>,
}

impl Timestamp {
    /// Parses Mint's text leniently: RFC 3339 (also with a space for `T`, and years beyond 9999 as
    /// chrono reads them), or a date-time without offset, taken as UTC (.NET's unspecified kind).
    /// Anything else is kept with no value.
    pub fn parse(raw: impl Into<String>) -> Self {
        let raw = raw.into();
        let parsed = parse_lenient(&raw);
        Self { raw, parsed }
    }

    /// The text as Mint sent it (a JSON number or other non-string value in its JSON spelling).
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The parsed value, **not validated**: fine to display or compare, never to add to or
    /// subtract from (near chrono's limits that panics). Use [`Timestamp::plausible`] for that.
    pub fn parsed(&self) -> Option<DateTime<Utc>> {
        self.parsed
    }

    /// The value if it lies within `[not_before − CLOCK_SKEW_MAX, now + CLOCK_SKEW_MAX]`, else `None`.
    ///
    /// `now` is the caller's clock; `not_before` the earliest time the value can honestly have
    /// (when the execution was created, when the start was sent). A returned value is within a few
    /// minutes of real dates, so ordinary `chrono` arithmetic on it cannot overflow. On `None`, use
    /// your own observation time.
    pub fn plausible(
        &self,
        now: DateTime<Utc>,
        not_before: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.plausible_with_skew(now, not_before, CLOCK_SKEW_MAX)
    }

    /// [`Timestamp::plausible`] with another tolerance for clock skew.
    pub fn plausible_with_skew(
        &self,
        now: DateTime<Utc>,
        not_before: DateTime<Utc>,
        skew: Duration,
    ) -> Option<DateTime<Utc>> {
        let t = self.parsed?;
        let skew = TimeDelta::from_std(skew).unwrap_or(TimeDelta::MAX);
        let earliest = not_before
            .checked_sub_signed(skew)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let latest = now
            .checked_add_signed(skew)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        (earliest <= t && t <= latest).then_some(t)
    }
}

impl From<DateTime<Utc>> for Timestamp {
    fn from(t: DateTime<Utc>) -> Self {
        Self {
            raw: t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            parsed: Some(t),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.parsed {
            Some(_) => write!(f, "Timestamp({:?})", self.raw),
            None => write!(f, "Timestamp({:?}, unparsed)", self.raw),
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::String(s) => Timestamp::parse(s),
            // A number or another type: kept in its JSON spelling, never guessed into a date.
            other => Timestamp {
                raw: other.to_string(),
                parsed: None,
            },
        })
    }
}

fn parse_lenient(raw: &str) -> Option<DateTime<Utc>> {
    let s = raw.trim();
    if s.is_empty() {
        return None;
    }
    // chrono's `FromStr` is what serde used before: RFC 3339, a space for `T`, expanded years.
    if let Ok(t) = s.parse::<DateTime<Utc>>() {
        return Some(t);
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, format) {
            return Some(t.and_utc());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn decode(json: &str) -> Timestamp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn rfc3339_and_offsetless_forms_parse() {
        assert_eq!(
            decode(r#""2026-03-01T10:00:00Z""#).parsed(),
            Some(at("2026-03-01T10:00:00Z"))
        );
        assert_eq!(
            decode(r#""2026-03-01T12:00:00.5+02:00""#).parsed(),
            Some(at("2026-03-01T10:00:00.5Z"))
        );
        assert_eq!(
            decode(r#""2026-03-01T10:00:00.1234567""#).parsed(),
            Some(at("2026-03-01T10:00:00.1234567Z")),
            ".NET without a kind: taken as UTC"
        );
        assert_eq!(
            decode(r#""2026-03-01 10:00:00""#).parsed(),
            Some(at("2026-03-01T10:00:00Z"))
        );
    }

    #[test]
    fn garbage_and_other_types_decode_and_keep_their_text() {
        let t = decode(r#""yesterday""#);
        assert_eq!((t.raw(), t.parsed()), ("yesterday", None));
        let t = decode("1767225600");
        assert_eq!((t.raw(), t.parsed()), ("1767225600", None));
        let t = decode(r#"{"ticks":1}"#);
        assert_eq!(t.raw(), r#"{"ticks":1}"#);
        assert_eq!(decode(r#""""#).parsed(), None);
    }

    #[test]
    fn absurd_dates_parse_but_are_not_plausible() {
        let now = at("2026-03-01T10:00:00Z");
        let created = at("2026-03-01T09:00:00Z");
        for absurd in [
            "0001-01-01T00:00:00Z",
            "+262142-12-31T00:00:00Z",
            "9999-12-31T23:59:59.9999999Z",
            "2026-02-01T00:00:00Z",
            "2026-03-02T00:00:00Z",
        ] {
            let t = Timestamp::parse(absurd);
            assert!(t.parsed().is_some(), "{absurd} parses");
            assert_eq!(t.plausible(now, created), None, "{absurd}");
        }
        let fine = Timestamp::parse("2026-03-01T09:30:00Z");
        assert_eq!(fine.plausible(now, created), fine.parsed());
        let skewed = Timestamp::parse("2026-03-01T10:04:00Z");
        assert_eq!(
            skewed.plausible(now, created),
            skewed.parsed(),
            "4 min ahead: skew"
        );
        assert_eq!(
            skewed.plausible_with_skew(now, created, Duration::ZERO),
            None
        );
    }

    #[test]
    fn serialises_back_as_the_raw_text() {
        let t = Timestamp::parse("0001-01-01T00:00:00Z");
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#""0001-01-01T00:00:00Z""#
        );
        let from: Timestamp = at("2026-03-01T10:00:00Z").into();
        assert_eq!(from.raw(), "2026-03-01T10:00:00Z");
    }

    proptest! {
        #[test]
        fn any_text_decodes_and_a_plausible_value_survives_arithmetic(
            raw in ".{0,40}|[+-]?[0-9]{1,6}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z",
            now_secs in -62_000_000_000i64..250_000_000_000i64,
            back_secs in 0i64..10_000_000_000i64,
        ) {
            let t = Timestamp::parse(raw.clone());
            prop_assert_eq!(t.raw(), raw.as_str());
            let now = DateTime::from_timestamp(now_secs, 0).unwrap();
            let not_before = DateTime::from_timestamp(now_secs - back_secs, 0).unwrap();
            if let Some(v) = t.plausible(now, not_before) {
                // What mintgate does with a finish time: add Mint's 30-day retention.
                let _ = v + TimeDelta::days(30);
                let _ = v - TimeDelta::days(30);
            }
        }
    }
}
