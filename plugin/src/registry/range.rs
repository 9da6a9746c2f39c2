//! `Range` requests on blobs: one byte range (`bytes=a-b`, `bytes=a-`, `bytes=-n`), clamped to
//! the blob's size.
//!
//! A range that cannot be satisfied (starting at or past the end, or malformed, as Go's
//! `http.ServeContent` — what the distribution registry uses — treats it) is a 416 with
//! `Content-Range: bytes */<size>`. A unit other than bytes, or several ranges at once, is
//! ignored, as RFC 9110 allows: the whole blob is served.

/// What a request asks of a blob of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// The whole blob (no `Range`, or one that is ignored).
    All,
    /// The bytes `start..=end`.
    Part {
        /// First byte.
        start: u64,
        /// Last byte (inclusive, as in `Content-Range`).
        end: u64,
    },
    /// Nothing of it can be given: 416.
    Unsatisfiable,
}

impl Wanted {
    /// The offset and length of the bytes to send of a blob of `size` bytes.
    pub fn span(self, size: u64) -> (u64, u64) {
        match self {
            Wanted::Part { start, end } => (start, end - start + 1),
            _ => (0, size),
        }
    }
}

fn number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// What the `Range` header `header` asks of a blob of `size` bytes.
pub fn wanted(header: Option<&str>, size: u64) -> Wanted {
    let Some(h) = header else {
        return Wanted::All;
    };
    let h = h.trim();
    let Some(spec) = h
        .get(..6)
        .filter(|unit| unit.eq_ignore_ascii_case("bytes="))
        .map(|_| &h[6..])
    else {
        return Wanted::All;
    };
    if spec.contains(',') {
        return Wanted::All;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Unsatisfiable;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // A suffix: the last n bytes.
        return match number(last) {
            Some(n) if n > 0 && size > 0 => Wanted::Part {
                start: size.saturating_sub(n),
                end: size - 1,
            },
            _ => Wanted::Unsatisfiable,
        };
    }
    let Some(start) = number(first) else {
        return Wanted::Unsatisfiable;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(e) if e >= start => e,
            _ => return Wanted::Unsatisfiable,
        }
    };
    if start >= size {
        return Wanted::Unsatisfiable;
    }
    Wanted::Part {
        start,
        end: end.min(size - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_clamped_or_refused() {
        let part = |start, end| Wanted::Part { start, end };
        let cases = [
            (None, 100, Wanted::All),
            (Some("bytes=0-9"), 100, part(0, 9)),
            (Some("bytes=10-"), 100, part(10, 99)),
            (Some("bytes=90-200"), 100, part(90, 99)),
            (Some("bytes=-10"), 100, part(90, 99)),
            (Some("bytes=-1000"), 100, part(0, 99)),
            (Some("bytes=99-99"), 100, part(99, 99)),
            (Some("Bytes=1-2"), 100, part(1, 2)),
            (Some(" bytes= 3 - 4 "), 100, part(3, 4)),
            (Some("bytes=100-"), 100, Wanted::Unsatisfiable),
            (Some("bytes=100-200"), 100, Wanted::Unsatisfiable),
            (Some("bytes=5-2"), 100, Wanted::Unsatisfiable),
            (Some("bytes=-0"), 100, Wanted::Unsatisfiable),
            (Some("bytes=0-0"), 0, Wanted::Unsatisfiable),
            (Some("bytes=-5"), 0, Wanted::Unsatisfiable),
            (Some("bytes=x-y"), 100, Wanted::Unsatisfiable),
            (Some("bytes=1"), 100, Wanted::Unsatisfiable),
            (Some("bytes=-"), 100, Wanted::Unsatisfiable),
            (Some("bytes=+1-2"), 100, Wanted::Unsatisfiable),
            (
                Some("bytes=99999999999999999999999-"),
                100,
                Wanted::Unsatisfiable,
            ),
            (
                Some("bytes=18446744073709551615-"),
                100,
                Wanted::Unsatisfiable,
            ),
            (Some("bytes=0-18446744073709551615"), 100, part(0, 99)),
            // Other units and several ranges are ignored.
            (Some("items=0-1"), 100, Wanted::All),
            (Some("bytes=0-1,5-6"), 100, Wanted::All),
            (Some(""), 100, Wanted::All),
            (Some("bytés=0-1"), 100, Wanted::All),
        ];
        for (header, size, want) in cases {
            assert_eq!(wanted(header, size), want, "{header:?} of {size}");
        }
        assert_eq!(part(10, 19).span(100), (10, 10));
        assert_eq!(Wanted::All.span(100), (0, 100));
    }
}
