//! Value types of the schema that validation checks after deserialization.
//!
//! serde stops at the first error it meets, but an operator wants every mistake in a
//! file at once. So values with a syntax of their own (addresses, durations, CIDRs,
//! file modes, ports) deserialize leniently: [`Parsed`] keeps the text as written and
//! the parse result, [`Port`] keeps any integer. Validation then reports every bad
//! value with its key path, and a [`Config`](crate::Config) that left
//! [`load`](crate::load) holds only good ones.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value written as text and parsed from it, e.g. an address or a duration.
///
/// Deserializing never fails on a malformed value: the problem is kept and reported by
/// validation together with every other one.
#[derive(Clone, PartialEq, Eq)]
pub struct Parsed<T> {
    raw: String,
    value: Result<T, String>,
}

impl<T: FromStr> Parsed<T>
where
    T::Err: fmt::Display,
{
    /// Parses `raw`, keeping the error for validation to report.
    pub fn parse(raw: impl Into<String>) -> Self {
        let raw = raw.into();
        let value = raw
            .trim()
            .parse::<T>()
            .map_err(|e| explain(raw.trim(), e.to_string()));
        Self { raw, value }
    }
}

/// Says what is wrong with an address the standard parsers only call "invalid IP
/// address syntax": most often a prefix length longer than the address.
fn explain(raw: &str, err: String) -> String {
    if !err.contains("invalid IP address syntax") {
        return err;
    }
    let Some((addr, len)) = raw.split_once('/') else {
        return err;
    };
    let max = match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => 32,
        Ok(std::net::IpAddr::V6(_)) => 128,
        Err(_) => return format!("{addr} is not an IP address"),
    };
    match len.parse::<u32>() {
        Ok(len) if len > max => format!("prefix length {len} is longer than {max}"),
        Ok(_) => err,
        Err(_) => format!("prefix length {len:?} is not a number"),
    }
}

impl<T> Parsed<T> {
    /// The text as written in the configuration.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The parse error, if the text did not parse.
    pub fn error(&self) -> Option<&str> {
        self.value.as_ref().err().map(String::as_str)
    }

    /// The parsed value.
    ///
    /// # Panics
    /// Only on a value that failed validation; [`load`](crate::load) never returns one.
    pub fn get(&self) -> &T {
        self.value
            .as_ref()
            .expect("config::load refuses a configuration with unparsable values")
    }
}

impl<T: fmt::Display> Parsed<T> {
    /// Wraps an already valid value.
    pub fn from_value(value: T) -> Self {
        Self {
            raw: value.to_string(),
            value: Ok(value),
        }
    }
}

impl<T: FromStr> FromStr for Parsed<T>
where
    T::Err: fmt::Display,
{
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::parse(s))
    }
}

impl<T> fmt::Debug for Parsed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.raw)
    }
}

impl<T> fmt::Display for Parsed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl<T> Serialize for Parsed<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.raw.trim())
    }
}

impl<'de, T: FromStr> Deserialize<'de> for Parsed<T>
where
    T::Err: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::parse)
    }
}

/// A TCP or UDP port as written; validation refuses 0 and values above 65535.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Port(u64);

impl Port {
    /// Wraps a port number.
    pub const fn new(port: u16) -> Self {
        Self(port as u64)
    }

    /// The number as written, possibly out of range before validation.
    pub fn raw(self) -> u64 {
        self.0
    }

    /// The port.
    ///
    /// # Panics
    /// Only on a value that failed validation; [`load`](crate::load) never returns one.
    pub fn get(self) -> u16 {
        u16::try_from(self.0).expect("config::load refuses ports above 65535")
    }
}

/// A duration written the human way: `500ms`, `30s`, `1m`, `1h 30m`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        use humantime::DurationError as E;
        humantime::parse_duration(s)
            .map(HumanDuration)
            .map_err(|e| match e {
                // These name a character position, which reads as gibberish here.
                E::InvalidCharacter(_) | E::NumberExpected(_) | E::Empty => {
                    "not a duration (write e.g. 500ms, 30s, 1m)".to_string()
                }
                e => format!("{e} (write e.g. 500ms, 30s, 1m)"),
            })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// A duration field; `get()` gives the `std::time::Duration`.
pub type DurationValue = Parsed<HumanDuration>;

impl Parsed<HumanDuration> {
    /// The duration.
    pub fn duration(&self) -> Duration {
        self.get().0
    }

    /// A duration field with a default value.
    pub fn of(d: Duration) -> Self {
        Self::from_value(HumanDuration(d))
    }
}

/// `host:port` of a peer, where the host may be a DNS name, an IPv4 address or a
/// bracketed IPv6 address (`[2001:db8::1]:8443`). Names resolve when connecting.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HostPort {
    /// The host without brackets.
    pub host: String,
    /// The port.
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| "expected host:port".to_string())?;
        let host = match host.strip_prefix('[') {
            Some(rest) => rest
                .strip_suffix(']')
                .ok_or_else(|| "unclosed [ in IPv6 host".to_string())?,
            None if host.contains(':') => {
                return Err("an IPv6 host needs brackets: [addr]:port".into())
            }
            None => host,
        };
        if host.is_empty() {
            return Err("expected host:port, the host is empty".into());
        }
        let port: u16 = port
            .parse()
            .map_err(|_| format!("port {port:?} is not a port"))?;
        if port == 0 {
            return Err("port 0 is not a port".into());
        }
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Unix permission bits written in octal, e.g. `"0600"`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FileMode(pub u32);

impl FromStr for FileMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mode = u32::from_str_radix(s.trim_start_matches("0o"), 8)
            .map_err(|_| "expected octal permission bits such as 0600".to_string())?;
        if mode > 0o777 {
            return Err("permission bits go up to 0777".into());
        }
        Ok(Self(mode))
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// Deserializes a list that may also be written as one comma-separated string, which
/// is how environment overrides spell lists (`SSSONECTOR_NETWORK__ROUTES=a,b`). An
/// empty value is an empty list.
pub(crate) fn list_or_csv<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + FromStr,
    T::Err: fmt::Display,
{
    d.deserialize_any(ListOrCsv(std::marker::PhantomData))
}

/// A visitor rather than an untagged enum: it keeps each item's own error and key
/// path, where an untagged enum only says that no form matched.
struct ListOrCsv<T>(std::marker::PhantomData<T>);

impl<'de, T> serde::de::Visitor<'de> for ListOrCsv<T>
where
    T: Deserialize<'de> + FromStr,
    T::Err: fmt::Display,
{
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list or a comma-separated text")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Vec<T>, E> {
        Ok(Vec::new())
    }

    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Vec<T>, E> {
        if s.trim().is_empty() {
            return Ok(Vec::new());
        }
        s.split(',')
            .map(|item| item.trim().parse::<T>().map_err(E::custom))
            .collect()
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_accepts_names_v4_and_bracketed_v6() {
        let cases = [
            ("server.example:8443", "server.example", 8443),
            ("192.0.2.1:1", "192.0.2.1", 1),
            ("[2001:db8::1]:443", "2001:db8::1", 443),
        ];
        for (text, host, port) in cases {
            let hp: HostPort = text.parse().expect(text);
            assert_eq!((hp.host.as_str(), hp.port), (host, port), "{text}");
            assert_eq!(hp.to_string(), text);
        }
    }

    #[test]
    fn host_port_refuses_bad_forms() {
        for text in [
            "nohost",
            ":80",
            "h:0",
            "h:99999",
            "2001:db8::1:80",
            "[::1:80",
        ] {
            assert!(
                text.parse::<HostPort>().is_err(),
                "{text} should be refused"
            );
        }
    }

    #[test]
    fn file_mode_is_octal() {
        assert_eq!("0600".parse::<FileMode>(), Ok(FileMode(0o600)));
        assert_eq!("660".parse::<FileMode>(), Ok(FileMode(0o660)));
        assert!("0800".parse::<FileMode>().is_err());
        assert!("01777".parse::<FileMode>().is_err());
        assert_eq!(FileMode(0o600).to_string(), "0600");
    }

    #[test]
    fn durations_are_human() {
        let d: Parsed<HumanDuration> = Parsed::parse("1m 30s");
        assert_eq!(d.duration(), Duration::from_secs(90));
        let bad: Parsed<HumanDuration> = Parsed::parse("30");
        assert!(bad.error().expect("no unit is an error").contains("30s"));
    }

    #[test]
    fn a_prefix_longer_than_the_address_says_so() {
        let cases = [
            ("10.0.0.0/33", "prefix length 33 is longer than 32"),
            ("2001:db8::/129", "prefix length 129 is longer than 128"),
            ("10.0.0.300/24", "10.0.0.300 is not an IP address"),
            ("10.0.0.0/x", "prefix length \"x\" is not a number"),
        ];
        for (text, message) in cases {
            let net: Parsed<ipnet::IpNet> = Parsed::parse(text);
            assert_eq!(net.error(), Some(message), "{text}");
        }
        let ok: Parsed<ipnet::IpNet> = Parsed::parse("10.0.0.0/32");
        assert_eq!(ok.error(), None);
    }
}
