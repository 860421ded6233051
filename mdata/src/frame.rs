//! Version 2 frames: `V2 <body length> <crc32 of body> <body>\n`, body
//! `<request id> <code> [<base64 payload>]`.
//!
//! The parsers follow the two reference peers: requests are read the way SmartOS's
//! metadata agent reads them (a frame that does not parse, whose length is wrong or
//! whose checksum differs is dropped without an answer), responses the way
//! mdata-client reads them.

use crate::base64;
use crate::crc32::crc32_hex;

/// One decoded version 2 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The request id (8 hex digits from the clients we know), echoed in the answer.
    pub reqid: String,
    /// The request command (`GET`, `PUT`...) or response code (`SUCCESS`...).
    pub code: String,
    /// The decoded payload; empty when the frame carried none.
    pub payload: Vec<u8>,
}

/// Why a response frame was refused by the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The line does not begin with `V2 `.
    #[error("message did not start with V2")]
    NotV2,
    /// The length field is missing, zero or not a number.
    #[error("invalid content length")]
    Length,
    /// The checksum field is missing or not hex.
    #[error("invalid crc32 in frame")]
    Crc,
    /// The body's length or checksum differs from the header's.
    #[error("clen/crc32 mismatch")]
    Mismatch,
    /// The body has no request id or no code.
    #[error("missing request id or code")]
    Body,
}

/// Encodes a frame, trailing newline included. An empty payload is left out, as both
/// reference implementations do.
pub fn encode(reqid: &str, code: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = format!("{reqid} {code}");
    if !payload.is_empty() {
        body.push(' ');
        body.push_str(&base64::encode(payload));
    }
    format!("V2 {} {} {body}\n", body.len(), crc32_hex(body.as_bytes())).into_bytes()
}

fn is_ws(b: u8) -> bool {
    b.is_ascii_whitespace()
}

/// Splits off one token and the whitespace after it: (token, rest).
fn token(s: &[u8]) -> (&[u8], &[u8]) {
    let end = s.iter().position(|&b| is_ws(b)).unwrap_or(s.len());
    let rest = &s[end..];
    let skip = rest.iter().position(|&b| !is_ws(b)).unwrap_or(rest.len());
    (&s[..end], &rest[skip..])
}

fn trim_start(s: &[u8]) -> &[u8] {
    let skip = s.iter().position(|&b| !is_ws(b)).unwrap_or(s.len());
    &s[skip..]
}

/// Parses the part of a request line after `V2 ` the way SmartOS's agent does:
/// `<decimal length> <hex crc> <hex reqid> <rest>`, the body being `reqid + " " + rest`;
/// length and checksum must match it exactly. `None` means: drop the line silently.
pub fn parse_request(after_v2: &[u8]) -> Option<Frame> {
    let (len, rest) = token(trim_start(after_v2));
    let (crc, rest) = token(rest);
    let (reqid, rest) = token(rest);
    let digits = |t: &[u8], hex: bool| {
        !t.is_empty()
            && t.iter()
                .all(|&b| b.is_ascii_digit() || (hex && matches!(b, b'a'..=b'f')))
    };
    if !digits(len, false) || !digits(crc, true) || !digits(reqid, true) || rest.is_empty() {
        return None;
    }
    let mut body = Vec::with_capacity(reqid.len() + 1 + rest.len());
    body.extend_from_slice(reqid);
    body.push(b' ');
    body.extend_from_slice(rest);
    let len: usize = std::str::from_utf8(len).ok()?.parse().ok()?;
    if len == 0 || len != body.len() || crc != crc32_hex(&body).as_bytes() {
        return None;
    }
    let (code, payload) = token(rest);
    Some(Frame {
        reqid: String::from_utf8_lossy(reqid).into_owned(),
        code: String::from_utf8_lossy(code).into_owned(),
        payload: base64::decode_lenient(payload),
    })
}

/// Parses a whole response line (without its newline) the way mdata-client does.
pub fn parse_response(line: &[u8]) -> Result<Frame, FrameError> {
    let rest = line.strip_prefix(b"V2 ").ok_or(FrameError::NotV2)?;
    let (len, rest) = token(rest);
    let len: usize = std::str::from_utf8(len)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n != 0)
        .ok_or(FrameError::Length)?;
    let (crc, body) = token(rest);
    let crc = std::str::from_utf8(crc)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .filter(|&n| n != 0)
        .ok_or(FrameError::Crc)?;
    if body.len() != len || crate::crc32::crc32(body) != crc {
        return Err(FrameError::Mismatch);
    }
    let (reqid, rest) = token(body);
    let (code, payload) = token(rest);
    if reqid.is_empty() || code.is_empty() {
        return Err(FrameError::Body);
    }
    Ok(Frame {
        reqid: String::from_utf8_lossy(reqid).into_owned(),
        code: String::from_utf8_lossy(code).into_owned(),
        payload: base64::decode_lenient(payload),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_protocol_documents_example() {
        assert_eq!(
            encode("dc4fae17", "SUCCESS", b"[]"),
            b"V2 21 265ae1d8 dc4fae17 SUCCESS W10=\n"
        );
        assert_eq!(
            parse_response(b"V2 21 265ae1d8 dc4fae17 SUCCESS W10=").unwrap(),
            Frame {
                reqid: "dc4fae17".into(),
                code: "SUCCESS".into(),
                payload: b"[]".to_vec()
            }
        );
    }

    #[test]
    fn leaves_out_an_empty_payload() {
        let f = encode("0000abcd", "NOTFOUND", b"");
        assert_eq!(f, b"V2 17 9a00ac15 0000abcd NOTFOUND\n".to_vec());
        let r = parse_response(&f[..f.len() - 1]).unwrap();
        assert_eq!((r.code.as_str(), r.payload.len()), ("NOTFOUND", 0));
    }

    #[test]
    fn parses_a_request_as_mdata_client_writes_it() {
        // mdata-get sdc:uuid: body "<reqid> GET " + base64("sdc:uuid").
        let body = format!("1234abcd GET {}", base64::encode(b"sdc:uuid"));
        let line = format!("{} {} {body}", body.len(), crc32_hex(body.as_bytes()));
        let f = parse_request(line.as_bytes()).unwrap();
        assert_eq!((f.reqid.as_str(), f.code.as_str()), ("1234abcd", "GET"));
        assert_eq!(f.payload, b"sdc:uuid");
    }

    #[test]
    fn drops_requests_with_a_wrong_length_or_checksum() {
        let body = "1234abcd KEYS";
        let good = format!("{} {} {body}", body.len(), crc32_hex(body.as_bytes()));
        assert!(parse_request(good.as_bytes()).is_some());
        let bad_len = format!("{} {} {body}", body.len() + 1, crc32_hex(body.as_bytes()));
        assert!(parse_request(bad_len.as_bytes()).is_none());
        let bad_crc = format!("{} 0badc0de {body}", body.len());
        assert!(parse_request(bad_crc.as_bytes()).is_none());
        // The agent compares the checksum as text: upper-case hex does not match.
        let upper = format!(
            "{} {} {body}",
            body.len(),
            crc32_hex(body.as_bytes()).to_uppercase()
        );
        assert!(parse_request(upper.as_bytes()).is_none());
        assert!(parse_request(b"").is_none());
        assert!(parse_request(b"0 00000000 x").is_none());
    }

    #[test]
    fn client_refuses_damaged_responses() {
        assert_eq!(parse_response(b"SUCCESS"), Err(FrameError::NotV2));
        assert_eq!(parse_response(b"V2 x 1 a b"), Err(FrameError::Length));
        assert_eq!(parse_response(b"V2 21 zz a b"), Err(FrameError::Crc));
        assert_eq!(
            parse_response(b"V2 21 265ae1d9 dc4fae17 SUCCESS W10="),
            Err(FrameError::Mismatch)
        );
    }
}
