//! Reply parsing against the protocol's layouts, each malformed case, and property tests: no
//! input makes the parsers panic, and coverage agrees with a byte map.

use proptest::prelude::*;

use super::*;

fn simple(cookie: u64, error: u32) -> Vec<u8> {
    let mut v = SIMPLE_MAGIC.to_be_bytes().to_vec();
    v.extend(error.to_be_bytes());
    v.extend(cookie.to_be_bytes());
    v
}

fn chunk(flags: u16, kind: u16, cookie: u64, len: u32) -> Vec<u8> {
    let mut v = STRUCTURED_MAGIC.to_be_bytes().to_vec();
    v.extend(flags.to_be_bytes());
    v.extend(kind.to_be_bytes());
    v.extend(cookie.to_be_bytes());
    v.extend(len.to_be_bytes());
    v
}

#[test]
fn headers_parse_once_whole() {
    let s = simple(0x1122, 5);
    for cut in 0..s.len() {
        assert_eq!(parse_header(&s[..cut]), Ok(None), "cut at {cut}");
    }
    assert_eq!(
        parse_header(&s),
        Ok(Some((
            Header::Simple {
                cookie: 0x1122,
                error: 5
            },
            16
        )))
    );
    let c = chunk(FLAG_DONE | 0x80, TYPE_OFFSET_DATA, 7, 4104);
    assert_eq!(parse_header(&c[..19]), Ok(None));
    let (h, n) = parse_header(&c).unwrap().unwrap();
    assert_eq!(n, 20);
    assert_eq!(
        h,
        Header::Chunk {
            done: true,
            kind: TYPE_OFFSET_DATA,
            cookie: 7,
            len: 4104
        }
    );
    assert_eq!(h.cookie(), 7);
    assert!(
        parse_header(&[0xde, 0xad, 0xbe, 0xef])
            .unwrap_err()
            .0
            .contains("0xdeadbeef")
    );
}

#[test]
fn chunk_lengths_are_checked_against_their_type() {
    assert_eq!(body_needs(TYPE_NONE, 0, true), Ok(0));
    assert!(
        body_needs(TYPE_NONE, 0, false)
            .unwrap_err()
            .0
            .contains("DONE")
    );
    assert!(body_needs(TYPE_NONE, 4, true).is_err());
    assert_eq!(body_needs(TYPE_OFFSET_DATA, 9, false), Ok(8));
    assert!(body_needs(TYPE_OFFSET_DATA, 8, false).is_err(), "no data");
    assert_eq!(body_needs(TYPE_OFFSET_HOLE, 12, false), Ok(12));
    assert!(body_needs(TYPE_OFFSET_HOLE, 13, false).is_err());
    assert_eq!(body_needs(TYPE_ERROR, 6, true), Ok(6));
    assert!(body_needs(TYPE_ERROR, 5, true).is_err());
    assert!(body_needs(TYPE_ERROR_OFFSET, 13, true).is_err());
    assert!(
        body_needs(TYPE_ERROR, MAX_SMALL_BODY + 1, true).is_err(),
        "too long to buffer"
    );
    assert_eq!(body_needs(0x8007, 2, true), Ok(2), "an unknown error type");
    assert!(body_needs(0x8007, u32::MAX, true).is_err());
    assert!(
        body_needs(5, 12, true).unwrap_err().0.contains("type 5"),
        "never asked for"
    );
    assert!(body_needs(77, 0, true).is_err());
}

#[test]
fn bodies_give_data_holes_and_errors() {
    let mut data = 4096u64.to_be_bytes().to_vec();
    assert_eq!(
        parse_body(TYPE_OFFSET_DATA, 520, &data),
        Ok(Body::Data {
            offset: 4096,
            len: 512
        })
    );
    data.extend(100u32.to_be_bytes());
    assert_eq!(
        parse_body(TYPE_OFFSET_HOLE, 12, &data),
        Ok(Body::Hole {
            offset: 4096,
            len: 100
        })
    );
    let mut zero_hole = 0u64.to_be_bytes().to_vec();
    zero_hole.extend(0u32.to_be_bytes());
    assert!(parse_body(TYPE_OFFSET_HOLE, 12, &zero_hole).is_err());
    let mut err = 28u32.to_be_bytes().to_vec();
    err.extend(3u16.to_be_bytes());
    err.extend(b"full");
    assert_eq!(
        parse_body(TYPE_ERROR, 10, &err),
        Ok(Body::Error {
            errno: Errno::NOSPC
        })
    );
    assert!(
        parse_body(TYPE_ERROR, 8, &err)
            .unwrap_err()
            .0
            .contains("message of 3")
    );
    let mut zero = 0u32.to_be_bytes().to_vec();
    zero.extend(0u16.to_be_bytes());
    assert!(parse_body(TYPE_ERROR, 6, &zero).is_err());
    assert_eq!(
        parse_body(0x8009, 2, &[1, 2]),
        Ok(Body::Error { errno: Errno::IO })
    );
    assert_eq!(parse_body(TYPE_NONE, 0, &[]), Ok(Body::None));
}

#[test]
fn errors_map_to_linux_errnos() {
    assert_eq!(errno_of(1), Errno::PERM);
    assert_eq!(errno_of(95), Errno::OPNOTSUPP);
    assert_eq!(errno_of(108), Errno::SHUTDOWN);
    assert_eq!(errno_of(9999), Errno::INVAL, "unknown values are EINVAL");
}

#[test]
fn coverage_merges_and_refuses_overlap() {
    let mut c = Coverage::default();
    c.add(4096, 8192).unwrap();
    c.add(0, 1024).unwrap();
    assert!(!c.is_whole(8192));
    assert!(c.add(512, 2048).unwrap_err().0.contains("overlap"));
    assert!(c.add(8000, 9000).is_err());
    c.add(1024, 4096).unwrap();
    assert!(c.is_whole(8192));
    assert!(!c.is_whole(9000));
    c.clear();
    assert!(c.is_whole(0));
}

#[test]
fn coverage_in_too_many_pieces_is_abuse() {
    let mut c = Coverage::default();
    for i in 0..MAX_PIECES as u64 {
        c.add(i * 2, i * 2 + 1).unwrap();
    }
    assert!(
        c.add(u64::MAX - 1, u64::MAX)
            .unwrap_err()
            .0
            .contains("pieces")
    );
}

proptest! {
    #[test]
    fn any_bytes_parse_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
        if let Ok(Some((h, n))) = parse_header(&bytes) {
            prop_assert!(n <= bytes.len());
            if let Header::Chunk { kind, len, done, .. } = h
                && let Ok(need) = body_needs(kind, len, done)
            {
                let body = &bytes[n..];
                if body.len() >= need {
                    let _ = parse_body(kind, len, &body[..need]);
                }
            }
        }
    }

    #[test]
    fn coverage_agrees_with_a_byte_map(ranges in proptest::collection::vec((0u64..64, 1u64..16), 0..24)) {
        let mut c = Coverage::default();
        let mut map = [false; 80];
        for (start, len) in ranges {
            let end = start + len;
            let overlaps = map[start as usize..end as usize].iter().any(|&b| b);
            prop_assert_eq!(c.add(start, end).is_err(), overlaps);
            if !overlaps {
                map[start as usize..end as usize].fill(true);
            }
            let whole_prefix = map.iter().take_while(|&&b| b).count() as u64;
            let total = map.iter().filter(|&&b| b).count() as u64;
            prop_assert_eq!(c.is_whole(total), whole_prefix == total);
        }
    }
}
