//! Appending short pieces of text (numbers, addresses, names held in fixed-size arrays) to
//! a line buffer on the per-event path of the output formats.
//!
//! Copying a slice whose length the compiler cannot see becomes a call into the C
//! library's `memcpy`, whose fixed cost dwarfs the few bytes of a number or an address:
//! profiles of a connection storm showed that call alone at an eighth of the process's
//! CPU. The pieces here are instead copied as a whole array of known size (a few register
//! moves, inlined), and the line is cut back to the piece's length.

/// Appends the first `len` bytes of `text` (`len <= N`) by copying all `N` bytes and
/// cutting the line back, so that the copy has a length known when compiling. For text
/// stored a while ago (a process name); text rendered just now goes through [`push_with`].
#[inline(always)]
pub fn push_fixed<const N: usize>(buf: &mut Vec<u8>, text: &[u8; N], len: usize) {
    debug_assert!(len <= N);
    let end = buf.len() + len;
    buf.extend_from_slice(text);
    buf.truncate(end);
}

/// Appends `N` bytes, lets `write` render a piece into them from the start and return its
/// length, and cuts the line back to it. Rendering in place, rather than into an array
/// copied afterwards, matters: a processor cannot forward a wide load of bytes just
/// stored one or two at a time, and stalls on it (the copy was the most costly instruction
/// of number rendering when it did so).
#[inline(always)]
pub fn push_with<const N: usize>(buf: &mut Vec<u8>, write: impl FnOnce(&mut [u8; N]) -> usize) {
    let start = buf.len();
    buf.extend_from_slice(&[0; N]);
    let space: &mut [u8; N] = (&mut buf[start..]).try_into().expect("N bytes were just appended");
    let len = write(space);
    debug_assert!(len <= N);
    buf.truncate(start + len);
}

/// Two decimal digits of every number below 100, `00` to `99`.
const PAIRS: &[u8; 200] = b"\
    0001020304050607080910111213141516171819\
    2021222324252627282930313233343536373839\
    4041424344454647484950515253545556575859\
    6061626364656667686970717273747576777879\
    8081828384858687888990919293949596979899";

/// Appends the decimal digits of `n`.
#[inline]
pub fn push_u64(buf: &mut Vec<u8>, n: u64) {
    // u64::MAX has 20 digits.
    push_with::<20>(buf, |digits| {
        let len = n.checked_ilog10().map_or(1, |log| log as usize + 1);
        // From the last digit back, two at a time.
        let mut end = len;
        let mut rest = n;
        while rest >= 100 {
            let pair = (rest % 100) as usize * 2;
            rest /= 100;
            end -= 2;
            digits[end..end + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
        }
        if rest >= 10 {
            let pair = rest as usize * 2;
            digits[..2].copy_from_slice(&PAIRS[pair..pair + 2]);
        } else {
            digits[0] = b'0' + rest as u8;
        }
        len
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits(n: u64) -> String {
        let mut buf = b"x".to_vec();
        push_u64(&mut buf, n);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn push_u64_writes_every_digit_count() {
        let mut n = 1u64;
        for _ in 0..20 {
            for m in [n - 1, n, n + 1, n.saturating_mul(10) - 1] {
                assert_eq!(digits(m), format!("x{m}"));
            }
            n = n.saturating_mul(10);
        }
        for m in [0, 7, 42, 100, 65_535, u64::MAX] {
            assert_eq!(digits(m), format!("x{m}"));
        }
    }

    #[test]
    fn push_with_appends_only_what_was_written() {
        let mut buf = b"ab".to_vec();
        push_with::<4>(&mut buf, |space| {
            space[..3].copy_from_slice(b"cde");
            3
        });
        assert_eq!(buf, b"abcde");
        push_with::<4>(&mut buf, |_| 0);
        assert_eq!(buf, b"abcde");
    }

    #[test]
    fn push_fixed_appends_only_the_piece() {
        let mut buf = b"ab".to_vec();
        push_fixed(&mut buf, b"cdefgh", 3);
        assert_eq!(buf, b"abcde");
        push_fixed(&mut buf, b"xyz", 0);
        assert_eq!(buf, b"abcde");
        push_fixed(&mut buf, b"xyz", 3);
        assert_eq!(buf, b"abcdexyz");
    }
}
