//! The client side of the NBD handshake ("Handshake" and "Option haggling" in the NBD protocol,
//! doc/proto.md): fixed newstyle, structured replies when the server offers them, then
//! `NBD_OPT_GO` with a block-size request, falling back to `NBD_OPT_EXPORT_NAME` for servers
//! that do not know GO (and for those that do not speak fixed newstyle at all). TLS is not
//! supported: a server that requires it is refused with that reason.
//!
//! It runs on any blocking `Read + Write` (the caller bounds it in time with socket timeouts),
//! so tests and property tests drive it from bytes in memory. Everything the server sends is
//! checked before it is used: magics, echoed option numbers, reply and info lengths, sizes and
//! flags; every length is bounded before anything is allocated for it.

use std::io::{self, Read, Write};

use super::export::{BlockSizes, Export, TransmissionFlags};

/// `NBDMAGIC`: the server's first eight bytes.
const NBD_MAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: newstyle negotiation (the server's next eight bytes), and every client option.
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// `cliserv_magic`: oldstyle negotiation, which we do not speak.
const OLDSTYLE_MAGIC: u64 = 0x0000_4202_8186_1253;
/// The magic of every option reply.
const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;

/// Handshake flags (server) and client flags share these bits.
const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
const FLAG_NO_ZEROES: u16 = 1 << 1;

const OPT_EXPORT_NAME: u32 = 1;
const OPT_ABORT: u32 = 2;
const OPT_GO: u32 = 7;
const OPT_STRUCTURED_REPLY: u32 = 8;

const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const REP_ERROR: u32 = 1 << 31;
const REP_ERR_UNSUP: u32 = REP_ERROR | 1;
const REP_ERR_POLICY: u32 = REP_ERROR | 2;
const REP_ERR_INVALID: u32 = REP_ERROR | 3;
const REP_ERR_PLATFORM: u32 = REP_ERROR | 4;
const REP_ERR_TLS_REQD: u32 = REP_ERROR | 5;
const REP_ERR_UNKNOWN: u32 = REP_ERROR | 6;
const REP_ERR_SHUTDOWN: u32 = REP_ERROR | 7;
const REP_ERR_BLOCK_SIZE_REQD: u32 = REP_ERROR | 8;
const REP_ERR_TOO_BIG: u32 = REP_ERROR | 9;

const INFO_EXPORT: u16 = 0;
const INFO_BLOCK_SIZE: u16 = 3;

/// The longest export name the protocol allows.
pub const MAX_NAME_BYTES: usize = 4096;
/// The longest option reply we read: a 4096-byte string plus its framing, with room to spare.
const MAX_REPLY_BYTES: u32 = 16 << 10;
/// Replies to one `NBD_OPT_GO` we take before calling the server broken.
const MAX_GO_REPLIES: usize = 64;

/// Why a handshake failed.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    /// Reading or writing failed: the connection dropped or timed out.
    Io(io::Error),
    /// The server sent something the protocol does not allow.
    Protocol(String),
    /// The server refused (no such export, TLS required, shutting down, ...).
    Refused(String),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                f.write_str("the server closed the connection during the handshake")
            }
            HandshakeError::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                f.write_str("the server did not complete the handshake in time")
            }
            HandshakeError::Io(e) => write!(f, "{e}"),
            HandshakeError::Protocol(what) => write!(f, "protocol error: {what}"),
            HandshakeError::Refused(why) => f.write_str(why),
        }
    }
}

impl From<io::Error> for HandshakeError {
    fn from(e: io::Error) -> Self {
        HandshakeError::Io(e)
    }
}

type Result<T> = std::result::Result<T, HandshakeError>;

fn protocol<T>(what: impl Into<String>) -> Result<T> {
    Err(HandshakeError::Protocol(what.into()))
}

/// Negotiates export `name` on `stream`, which the server has just accepted; on success the
/// stream is in the transmission phase.
pub(crate) fn negotiate<S: Read + Write>(stream: &mut S, name: &str) -> Result<Export> {
    if name.len() > MAX_NAME_BYTES {
        return Err(HandshakeError::Refused(format!(
            "the export name is {} bytes, more than the protocol's {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    if read_u64(stream)? != NBD_MAGIC {
        return protocol("the server's greeting does not start with NBDMAGIC: not an NBD server");
    }
    match read_u64(stream)? {
        IHAVEOPT => {}
        OLDSTYLE_MAGIC => {
            return Err(HandshakeError::Refused(
                "the server speaks the oldstyle handshake, which has no export names; \
                 only newstyle servers are supported"
                    .into(),
            ));
        }
        other => return protocol(format!("unknown negotiation magic {other:#018x}")),
    }
    let server_flags = read_u16(stream)?;
    let fixed = server_flags & FLAG_FIXED_NEWSTYLE != 0;
    let no_zeroes = server_flags & FLAG_NO_ZEROES != 0;
    let client_flags = u32::from(server_flags & (FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES));
    stream.write_all(&client_flags.to_be_bytes())?;
    if !fixed {
        // Plain newstyle: EXPORT_NAME is the only option there is.
        return export_name(stream, name, no_zeroes, false);
    }
    let structured = structured_replies(stream)?;
    match go(stream, name, structured)? {
        Some(export) => Ok(export),
        None => export_name(stream, name, no_zeroes, structured),
    }
}

/// `NBD_OPT_STRUCTURED_REPLY`: whether the server will send structured replies.
fn structured_replies<S: Read + Write>(stream: &mut S) -> Result<bool> {
    send_option(stream, OPT_STRUCTURED_REPLY, &[])?;
    let (kind, _) = read_reply(stream, OPT_STRUCTURED_REPLY)?;
    match kind {
        REP_ACK => Ok(true),
        // Unsupported, or refused for any reason: simple replies, which every server sends.
        kind if kind & REP_ERROR != 0 => Ok(false),
        kind => protocol(format!(
            "reply type {kind} to NBD_OPT_STRUCTURED_REPLY, which takes only an ACK or an error"
        )),
    }
}

/// `NBD_OPT_GO` for `name`, asking for block sizes; `None` if the server does not know GO.
fn go<S: Read + Write>(stream: &mut S, name: &str, structured: bool) -> Result<Option<Export>> {
    let mut data = Vec::with_capacity(8 + name.len());
    // The name's length fits u32: it is at most MAX_NAME_BYTES.
    data.extend_from_slice(&(name.len() as u32).to_be_bytes());
    data.extend_from_slice(name.as_bytes());
    data.extend_from_slice(&1u16.to_be_bytes());
    data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    send_option(stream, OPT_GO, &data)?;
    let mut found: Option<(u64, u16)> = None;
    let mut block_sizes = BlockSizes::DEFAULT;
    for _ in 0..MAX_GO_REPLIES {
        let (kind, data) = read_reply(stream, OPT_GO)?;
        match kind {
            REP_INFO => {
                let Some((info, payload)) = data.split_first_chunk::<2>() else {
                    return protocol("an NBD_REP_INFO reply shorter than its 2-byte type");
                };
                match u16::from_be_bytes(*info) {
                    INFO_EXPORT => {
                        let Ok(&[s0, s1, s2, s3, s4, s5, s6, s7, f0, f1]) =
                            <&[u8; 10]>::try_from(payload)
                        else {
                            return protocol(format!(
                                "NBD_INFO_EXPORT of {} bytes (it has 12)",
                                data.len()
                            ));
                        };
                        let size = u64::from_be_bytes([s0, s1, s2, s3, s4, s5, s6, s7]);
                        found = Some((size, u16::from_be_bytes([f0, f1])));
                    }
                    INFO_BLOCK_SIZE => {
                        let Ok(words) = <&[u8; 12]>::try_from(payload) else {
                            return protocol(format!(
                                "NBD_INFO_BLOCK_SIZE of {} bytes (it has 14)",
                                data.len()
                            ));
                        };
                        let word = |i: usize| {
                            u32::from_be_bytes([words[i], words[i + 1], words[i + 2], words[i + 3]])
                        };
                        block_sizes = BlockSizes::checked(word(0), word(4), word(8))
                            .map_err(HandshakeError::Protocol)?;
                    }
                    // Name, description and whatever comes later: not needed.
                    _ => {}
                }
            }
            REP_ACK => {
                let Some((size, flags)) = found else {
                    return protocol("NBD_OPT_GO succeeded without NBD_INFO_EXPORT");
                };
                return Ok(Some(export(size, flags, block_sizes, structured)?));
            }
            REP_ERR_UNSUP => return Ok(None),
            kind if kind & REP_ERROR != 0 => {
                // The protocol's soft disconnect: the server may answer or just close.
                let _ = send_option(stream, OPT_ABORT, &[]);
                return Err(HandshakeError::Refused(refusal(kind, &data, name)));
            }
            kind => {
                return protocol(format!(
                    "reply type {kind} to NBD_OPT_GO, which takes INFO, ACK or an error"
                ));
            }
        }
    }
    protocol(format!("more than {MAX_GO_REPLIES} replies to NBD_OPT_GO"))
}

/// `NBD_OPT_EXPORT_NAME`: ends the handshake; a server without the export just hangs up.
fn export_name<S: Read + Write>(
    stream: &mut S,
    name: &str,
    no_zeroes: bool,
    structured: bool,
) -> Result<Export> {
    send_option(stream, OPT_EXPORT_NAME, name.as_bytes())?;
    let size = match read_u64(stream) {
        Err(HandshakeError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
            return Err(HandshakeError::Refused(format!(
                "the server hung up on NBD_OPT_EXPORT_NAME: it has no export named {name:?} \
                 (or refuses it)"
            )));
        }
        other => other?,
    };
    let flags = read_u16(stream)?;
    if !no_zeroes {
        let mut zeroes = [0u8; 124];
        stream.read_exact(&mut zeroes)?;
    }
    export(size, flags, BlockSizes::DEFAULT, structured)
}

fn export(size: u64, flags: u16, block_sizes: BlockSizes, structured: bool) -> Result<Export> {
    let export = Export {
        size,
        flags: TransmissionFlags::from_bits_retain(flags),
        block_sizes,
        structured,
    };
    export.check().map_err(HandshakeError::Protocol)?;
    Ok(export)
}

/// What a server's refusal of `NBD_OPT_GO` means to the user.
fn refusal(kind: u32, data: &[u8], name: &str) -> String {
    let why = match kind {
        REP_ERR_UNKNOWN => format!("the server has no export named {name:?}"),
        REP_ERR_TLS_REQD => {
            "the server requires TLS, which ublk's NBD client does not support".to_owned()
        }
        REP_ERR_POLICY => "the server's policy refuses this client".to_owned(),
        REP_ERR_SHUTDOWN => "the server is shutting down".to_owned(),
        REP_ERR_INVALID => "the server calls the request invalid".to_owned(),
        REP_ERR_PLATFORM => "the server cannot do this on its platform".to_owned(),
        REP_ERR_BLOCK_SIZE_REQD => "the server insists on block sizes it was asked for".to_owned(),
        REP_ERR_TOO_BIG => "the server calls the request too big".to_owned(),
        kind => format!("the server refused with error {:#x}", kind & !REP_ERROR),
    };
    // The message is the server's: shown, bounded, never trusted to be UTF-8 or printable.
    let message: String = String::from_utf8_lossy(data)
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect();
    if message.is_empty() {
        why
    } else {
        format!("{why} ({message})")
    }
}

fn send_option<W: Write>(stream: &mut W, option: u32, data: &[u8]) -> Result<()> {
    let mut msg = Vec::with_capacity(16 + data.len());
    msg.extend_from_slice(&IHAVEOPT.to_be_bytes());
    msg.extend_from_slice(&option.to_be_bytes());
    // Option data is at most a name and a few bytes more.
    msg.extend_from_slice(&(data.len() as u32).to_be_bytes());
    msg.extend_from_slice(data);
    stream.write_all(&msg)?;
    stream.flush()?;
    Ok(())
}

/// One option reply to `option`: its type and data.
fn read_reply<R: Read>(stream: &mut R, option: u32) -> Result<(u32, Vec<u8>)> {
    let magic = read_u64(stream)?;
    if magic != REPLY_MAGIC {
        return protocol(format!("option reply magic {magic:#018x}"));
    }
    let echoed = read_u32(stream)?;
    if echoed != option {
        return protocol(format!(
            "a reply to option {echoed} while option {option} was asked"
        ));
    }
    let kind = read_u32(stream)?;
    let len = read_u32(stream)?;
    if len > MAX_REPLY_BYTES {
        return protocol(format!("a {len}-byte option reply"));
    }
    let mut data = vec![0; len as usize];
    stream.read_exact(&mut data)?;
    Ok((kind, data))
}

fn read_u64<R: Read>(stream: &mut R) -> Result<u64> {
    let mut b = [0; 8];
    stream.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn read_u32<R: Read>(stream: &mut R) -> Result<u32> {
    let mut b = [0; 4];
    stream.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u16<R: Read>(stream: &mut R) -> Result<u16> {
    let mut b = [0; 2];
    stream.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

#[cfg(test)]
mod tests;
