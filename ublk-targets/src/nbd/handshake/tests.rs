//! The handshake against servers scripted byte by byte: the good ones of every kind, the
//! refusals, each way of breaking the protocol, and property tests over arbitrary and mangled
//! server bytes.

use std::io::Cursor;

use super::*;

/// A server's bytes to read, and what the client wrote.
struct Duplex {
    input: Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl Duplex {
    fn new(server: Vec<u8>) -> Self {
        Duplex {
            input: Cursor::new(server),
            output: Vec::new(),
        }
    }
}

impl Read for Duplex {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.input.read(buf)
    }
}

impl Write for Duplex {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn greeting(flags: u16) -> Vec<u8> {
    let mut v = NBD_MAGIC.to_be_bytes().to_vec();
    v.extend_from_slice(&IHAVEOPT.to_be_bytes());
    v.extend_from_slice(&flags.to_be_bytes());
    v
}

fn reply(option: u32, kind: u32, data: &[u8]) -> Vec<u8> {
    let mut v = REPLY_MAGIC.to_be_bytes().to_vec();
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&kind.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut d = INFO_EXPORT.to_be_bytes().to_vec();
    d.extend_from_slice(&size.to_be_bytes());
    d.extend_from_slice(&flags.to_be_bytes());
    reply(OPT_GO, REP_INFO, &d)
}

fn info_block(min: u32, pref: u32, max: u32) -> Vec<u8> {
    let mut d = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
    for w in [min, pref, max] {
        d.extend_from_slice(&w.to_be_bytes());
    }
    reply(OPT_GO, REP_INFO, &d)
}

const FLAGS: u16 = 0x014d; // HAS_FLAGS, SEND_FLUSH, SEND_FUA, SEND_WRITE_ZEROES, CAN_MULTI_CONN

/// A modern server: fixed newstyle, structured replies, GO with both infos.
fn modern(size: u64, flags: u16, blocks: (u32, u32, u32)) -> Vec<u8> {
    let mut s = greeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    s.extend(reply(OPT_STRUCTURED_REPLY, REP_ACK, &[]));
    s.extend(info_block(blocks.0, blocks.1, blocks.2));
    s.extend(reply(OPT_GO, REP_INFO, &[0, 1, b'x'])); // NBD_INFO_NAME: ignored
    s.extend(info_export(size, flags));
    s.extend(reply(OPT_GO, REP_ACK, &[]));
    s
}

fn run(server: Vec<u8>, name: &str) -> (Result<Export>, Vec<u8>) {
    let mut d = Duplex::new(server);
    let r = negotiate(&mut d, name);
    (r, d.output)
}

fn option_bytes(option: u32, data: &[u8]) -> Vec<u8> {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn a_modern_server_gives_structured_replies_and_block_sizes() {
    let (r, sent) = run(modern(1 << 30, FLAGS, (512, 4096, 1 << 20)), "disk");
    let export = r.expect("a good handshake");
    assert_eq!(export.size, 1 << 30);
    assert_eq!(export.flags.bits(), FLAGS);
    assert!(export.structured);
    assert_eq!(
        export.block_sizes,
        BlockSizes {
            minimum: 512,
            preferred: 4096,
            max_payload: 1 << 20
        }
    );
    // What the client said: fixed newstyle and no zeroes back, structured replies, then GO for
    // "disk" with one information request, NBD_INFO_BLOCK_SIZE.
    let mut want = 3u32.to_be_bytes().to_vec();
    want.extend(option_bytes(OPT_STRUCTURED_REPLY, &[]));
    let mut go = 4u32.to_be_bytes().to_vec();
    go.extend_from_slice(b"disk");
    go.extend_from_slice(&[0, 1, 0, 3]);
    want.extend(option_bytes(OPT_GO, &go));
    assert_eq!(sent, want);
}

#[test]
fn an_old_fixed_server_falls_back_to_export_name() {
    let mut s = greeting(FLAG_FIXED_NEWSTYLE);
    s.extend(reply(OPT_STRUCTURED_REPLY, REP_ERR_UNSUP, &[]));
    s.extend(reply(OPT_GO, REP_ERR_UNSUP, b"what is GO?"));
    s.extend((64u64 << 20).to_be_bytes());
    s.extend(0x0003u16.to_be_bytes());
    s.extend([0; 124]);
    let (r, sent) = run(s, "");
    let export = r.expect("EXPORT_NAME works");
    assert_eq!((export.size, export.structured), (64 << 20, false));
    assert_eq!(export.block_sizes, BlockSizes::DEFAULT);
    assert!(sent.ends_with(&option_bytes(OPT_EXPORT_NAME, b"")));
}

#[test]
fn a_plain_newstyle_server_gets_export_name_only() {
    let mut s = greeting(0);
    s.extend((1u64 << 20).to_be_bytes());
    s.extend(0x0001u16.to_be_bytes());
    s.extend([0; 124]);
    let (r, sent) = run(s, "a");
    assert_eq!(r.expect("plain newstyle").size, 1 << 20);
    let mut want = 0u32.to_be_bytes().to_vec();
    want.extend(option_bytes(OPT_EXPORT_NAME, b"a"));
    assert_eq!(sent, want, "client flags 0, then EXPORT_NAME alone");
}

fn refused(server: Vec<u8>) -> String {
    match run(server, "vol").0 {
        Err(HandshakeError::Refused(why)) => why,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn broken(server: Vec<u8>) -> String {
    match run(server, "vol").0 {
        Err(HandshakeError::Protocol(what)) => what,
        other => panic!("expected a protocol error, got {other:?}"),
    }
}

fn go_answer(replies: &[Vec<u8>]) -> Vec<u8> {
    let mut s = greeting(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
    s.extend(reply(OPT_STRUCTURED_REPLY, REP_ACK, &[]));
    for r in replies {
        s.extend_from_slice(r);
    }
    s
}

#[test]
fn refusals_say_why() {
    let why = refused(go_answer(&[reply(OPT_GO, REP_ERR_UNKNOWN, b"no\x07pe")]));
    assert!(
        why.contains("no export named \"vol\"") && why.ends_with("(nope)"),
        "{why}"
    );
    let why = refused(go_answer(&[reply(OPT_GO, REP_ERR_TLS_REQD, &[])]));
    assert!(why.contains("TLS"), "{why}");
    let why = refused(go_answer(&[reply(OPT_GO, REP_ERROR | 77, &[])]));
    assert!(why.contains("0x4d"), "{why}");
    let mut old = NBD_MAGIC.to_be_bytes().to_vec();
    old.extend(OLDSTYLE_MAGIC.to_be_bytes());
    assert!(refused(old).contains("oldstyle"));
    // EXPORT_NAME: a server without the export hangs up.
    let mut s = greeting(0);
    s.truncate(18);
    assert!(refused(s).contains("no export named \"vol\""));
    let long = "x".repeat(MAX_NAME_BYTES + 1);
    assert!(matches!(
        run(modern(1 << 20, FLAGS, (1, 4096, 1 << 20)), &long).0,
        Err(HandshakeError::Refused(_))
    ));
}

#[test]
fn every_protocol_violation_is_named() {
    let mut s = greeting(1);
    s[0] ^= 1;
    assert!(broken(s).contains("not an NBD server"));
    let mut s = greeting(1);
    s[15] ^= 1;
    assert!(broken(s).contains("negotiation magic"));
    let mut bad_magic = reply(OPT_STRUCTURED_REPLY, REP_ACK, &[]);
    bad_magic[0] = 0xff;
    let mut s = greeting(1);
    s.extend(bad_magic);
    assert!(broken(s).contains("reply magic"));
    let mut s = greeting(1);
    s.extend(reply(OPT_GO, REP_ACK, &[]));
    assert!(broken(s).contains("option 7 while option 8"));
    let mut s = greeting(1);
    s.extend(reply(OPT_STRUCTURED_REPLY, REP_INFO, &[]));
    assert!(broken(s).contains("takes only an ACK"));
    // A huge length: refused before anything is allocated or read.
    let mut huge = reply(OPT_GO, REP_INFO, &[]);
    huge[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(broken(go_answer(&[huge])).contains("4294967295-byte"));
    let short_export = reply(OPT_GO, REP_INFO, &[0, 0, 1, 2, 3]);
    assert!(broken(go_answer(&[short_export])).contains("NBD_INFO_EXPORT of 5 bytes"));
    let short_block = reply(OPT_GO, REP_INFO, &[0, 3, 0]);
    assert!(broken(go_answer(&[short_block])).contains("NBD_INFO_BLOCK_SIZE of 3"));
    assert!(broken(go_answer(&[reply(OPT_GO, REP_INFO, &[0])])).contains("2-byte type"));
    let bad_sizes = info_block(3, 4096, 1 << 20);
    assert!(broken(go_answer(&[bad_sizes])).contains("minimum block size 3"));
    assert!(broken(go_answer(&[reply(OPT_GO, REP_ACK, &[])])).contains("without NBD_INFO_EXPORT"));
    assert!(broken(go_answer(&[reply(OPT_GO, 2, &[])])).contains("reply type 2"));
    let empty = [info_export(0, 1), reply(OPT_GO, REP_ACK, &[])];
    assert!(broken(go_answer(&empty)).contains("empty"));
    let no_flags = [info_export(1 << 20, 0), reply(OPT_GO, REP_ACK, &[])];
    assert!(broken(go_answer(&no_flags)).contains("HAS_FLAGS"));
    let many: Vec<Vec<u8>> = (0..=MAX_GO_REPLIES)
        .map(|_| reply(OPT_GO, REP_INFO, &[0, 2]))
        .collect();
    assert!(broken(go_answer(&many)).contains("more than 64 replies"));
}

#[test]
fn a_connection_cut_anywhere_is_an_io_error_or_a_refusal() {
    let full = modern(1 << 30, FLAGS, (512, 4096, 1 << 20));
    for cut in 0..full.len() {
        match run(full[..cut].to_vec(), "disk").0 {
            Err(HandshakeError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof),
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

proptest::proptest! {
    /// Whatever a server sends, the handshake ends with an export or an error: no panic, no
    /// allocation beyond the bounded reply size.
    #[test]
    fn any_server_bytes_end_in_an_answer(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = run(bytes, "disk");
    }

    /// The same after a valid greeting, where the interesting parsing starts.
    #[test]
    fn any_option_replies_end_in_an_answer(
        fixed in proptest::bool::ANY,
        tail in proptest::collection::vec(proptest::num::u8::ANY, 0..512),
    ) {
        let mut s = greeting(u16::from(fixed) | FLAG_NO_ZEROES);
        s.extend(tail);
        let _ = run(s, "disk");
    }

    /// A good server's answer is read exactly, whatever its numbers.
    #[test]
    fn good_answers_parse_exactly(
        size in 1u64..=(i64::MAX as u64),
        flags in proptest::num::u16::ANY,
        min_shift in 0u32..=16,
        extra_pref in 0u32..=4,
        max_extra in 0u32..=(1 << 20),
    ) {
        let flags = flags | 1;
        let min = 1u32 << min_shift;
        let pref = min.max(512) << extra_pref;
        let max = pref + max_extra;
        let export = run(modern(size, flags, (min, pref, max)), "disk").0.expect("a good server");
        proptest::prop_assert_eq!(export.size, size);
        proptest::prop_assert_eq!(export.flags.bits(), flags);
        proptest::prop_assert_eq!(export.block_sizes.minimum, min);
        proptest::prop_assert_eq!(export.block_sizes.max_payload, max);
    }

    /// A good server's answer with one byte changed ends in an answer, never a panic; if it
    /// still succeeds, what it says was checked.
    #[test]
    fn mangled_answers_end_in_an_answer(at in 0usize..200, xor in 1u8..=255) {
        let mut s = modern(1 << 30, FLAGS, (512, 4096, 1 << 20));
        let at = at % s.len();
        s[at] ^= xor;
        if let Ok(export) = run(s, "disk").0 {
            proptest::prop_assert!(export.check().is_ok());
        }
    }
}
