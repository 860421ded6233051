//! The framing of a zone's console relay, client to zone (see the crate doc).

/// First bytes a console client sends to switch its direction of a zone's console relay
/// to frames (see the crate doc). It starts with a NUL byte, which no raw client sends
/// first but the rarest of typists.
pub const CONSOLE_FRAMED: &[u8] = b"\0skerry-console-frames-1\n";
/// Frame type: console input bytes.
pub const FRAME_DATA: u8 = b'd';
/// Frame type: window size, rows then columns, big-endian `u16` each.
pub const FRAME_WINSIZE: u8 = b'w';

/// Encodes one console frame; payloads longer than `u16::MAX` are split over frames.
pub fn console_frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 3);
    let mut chunks = payload.chunks(u16::MAX as usize).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[kind, 0, 0]);
    }
    for chunk in chunks {
        out.push(kind);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

/// The [`FRAME_WINSIZE`] frame for a `rows` x `cols` terminal.
pub fn winsize_frame(rows: u16, cols: u16) -> Vec<u8> {
    let mut payload = rows.to_be_bytes().to_vec();
    payload.extend_from_slice(&cols.to_be_bytes());
    console_frame(FRAME_WINSIZE, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_type_length_and_split_long_payloads() {
        assert_eq!(console_frame(FRAME_DATA, b"ls\r"), b"d\0\x03ls\r");
        assert_eq!(console_frame(FRAME_DATA, b""), b"d\0\0");
        assert_eq!(winsize_frame(40, 132), [b'w', 0, 4, 0, 40, 0, 132]);
        let long = vec![b'x'; 70_000];
        let f = console_frame(FRAME_DATA, &long);
        assert_eq!(f.len(), 70_000 + 6);
        assert_eq!(&f[..3], &[b'd', 0xff, 0xff]);
        assert_eq!(&f[3 + 65535..3 + 65535 + 3], &[b'd', 0x11, 0x71]);
    }
}
