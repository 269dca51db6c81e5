//! LogQL's `ip("…")` filters: an address, a range `a-b` or a CIDR block, matched against the
//! addresses in a line (`|= ip(…)`) or a label's value (`| addr = ip(…)`), IPv4 and IPv6.

use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq)]
pub enum IpRange {
    One(IpAddr),
    /// `a-b`, both ends included, one family.
    Span(IpAddr, IpAddr),
    /// `a/bits`.
    Cidr(IpAddr, u8),
}

fn addr(s: &str) -> Result<IpAddr, String> {
    s.trim().parse().map_err(|_| format!("ip(\"…\"): `{s}` is not an IPv4 or IPv6 address"))
}

/// An address as a number and its family's width in bits.
fn bits(a: IpAddr) -> (u128, u32) {
    match a {
        IpAddr::V4(v) => (u128::from(u32::from(v)), 32),
        IpAddr::V6(v) => (u128::from(v), 128),
    }
}

impl IpRange {
    pub fn parse(s: &str) -> Result<IpRange, String> {
        if let Some((a, b)) = s.split_once('-') {
            let (a, b) = (addr(a)?, addr(b)?);
            if a.is_ipv4() != b.is_ipv4() || bits(a).0 > bits(b).0 {
                return Err(format!("ip(\"{s}\"): a range runs from the lower to the higher address of one family"));
            }
            return Ok(IpRange::Span(a, b));
        }
        if let Some((a, n)) = s.split_once('/') {
            let a = addr(a)?;
            let n: u8 = n.trim().parse().map_err(|_| format!("ip(\"{s}\"): `{n}` is not a prefix length"))?;
            if u32::from(n) > bits(a).1 {
                return Err(format!("ip(\"{s}\"): a prefix of {n} bits is longer than the address"));
            }
            return Ok(IpRange::Cidr(a, n));
        }
        Ok(IpRange::One(addr(s)?))
    }

    pub fn contains(&self, x: IpAddr) -> bool {
        let (v, width) = bits(x);
        let same = |a: &IpAddr| a.is_ipv4() == x.is_ipv4();
        match self {
            IpRange::One(a) => *a == x,
            IpRange::Span(a, b) => same(a) && bits(*a).0 <= v && v <= bits(*b).0,
            IpRange::Cidr(a, n) => {
                if !same(a) {
                    return false;
                }
                let shift = width.saturating_sub(u32::from(*n));
                shift >= 128 || bits(*a).0 >> shift == v >> shift
            }
        }
    }

    /// Whether `value` (a label's) is an address in the range.
    pub fn matches_value(&self, value: &str) -> bool {
        value.trim().parse().is_ok_and(|a| self.contains(a))
    }

    /// Whether any address written in `line` is in the range: runs of hex digits, dots and
    /// colons are read as addresses, an IPv4 one also with a `:port` after it.
    pub fn in_line(&self, line: &str) -> bool {
        line.split(|c: char| !(c.is_ascii_hexdigit() || c == '.' || c == ':')).filter(|run| run.len() >= 2).any(|run| {
            // `::1` and `fe80::` as they stand; then without the sentence's `.` or `:` around.
            if let Ok(a) = run.parse().or_else(|_| run.trim_matches(|c| c == '.' || c == ':').parse()) {
                return self.contains(a);
            }
            // `10.0.0.1:8080`, or an IPv4 address among hex text: the dotted-decimal parts.
            run.split(|c: char| !(c.is_ascii_digit() || c == '.'))
                .map(|p| p.trim_matches('.'))
                .filter(|p| p.matches('.').count() == 3)
                .any(|p| p.parse().is_ok_and(|a| self.contains(a)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_ranges_and_blocks() {
        let r = |s: &str| IpRange::parse(s).unwrap();
        assert!(r("192.168.4.5/16").matches_value("192.168.200.1"));
        assert!(!r("192.168.4.5/16").matches_value("192.169.0.1"));
        assert!(r("10.0.0.0/0").matches_value("1.2.3.4") && !r("10.0.0.0/0").matches_value("::1"));
        assert!(r("192.168.0.1-192.189.10.12").matches_value("192.170.1.1"));
        assert!(!r("192.168.0.1-192.189.10.12").matches_value("192.189.10.13"));
        assert!(r("2001:db8::/32").matches_value("2001:db8:1::5") && !r("2001:db8::/32").matches_value("2001:db9::5"));
        assert!(r("::1").matches_value("0:0:0:0:0:0:0:1"));
        assert!(!r("1.2.3.4").matches_value("not an address"));
        for bad in ["1.2.3", "1.2.3.4/33", "10.0.0.9-10.0.0.1", "1.2.3.4-::1", "x"] {
            assert!(IpRange::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_are_found_in_lines() {
        let r = IpRange::parse("10.251.0.0/16").unwrap();
        assert!(r.in_line("Receiving block blk_1 src: /10.251.73.220:50010 dest: /10.251.73.220:50010"));
        assert!(r.in_line("client=10.251.1.2, status=200"));
        assert!(!r.in_line("client=10.252.1.2 version 10.251.1"));
        assert!(!r.in_line("build 110.251.1.2"), "an address inside a longer number is another address");
        let v6 = IpRange::parse("2001:db8::/32").unwrap();
        assert!(v6.in_line("peer [2001:db8::7]:443 closed"));
        assert!(IpRange::parse("::1").unwrap().in_line("from ::1 port 22"));
        assert!(IpRange::parse("fe80::/10").unwrap().in_line("addr fe80:: up"));
        // A block of one family never holds an address of the other (and never overflows).
        assert!(!IpRange::parse("::/64").unwrap().matches_value("1.2.3.4"));
        assert!(!IpRange::parse("2001:db8::/48").unwrap().in_line("from 10.0.0.1"));
        assert!(!v6.in_line("deadbeef cafe"));
    }
}
