//! Just enough STUN parsing to demultiplex one shared UDP port (RFC 5389, RFC 8445 §7.2.2).
//!
//! A browser's connectivity check carries `USERNAME = <our ufrag>:<its ufrag>`; our ufrag names the
//! participant. Everything here is a pure function over untrusted bytes: it never panics and never
//! allocates.

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const HEADER_LEN: usize = 20;
const ATTR_USERNAME: u16 = 0x0006;
const BINDING_REQUEST: u16 = 0x0001;

/// First-byte classes of RFC 7983 demultiplexing.
pub fn is_stun(datagram: &[u8]) -> bool {
    datagram.len() >= HEADER_LEN && datagram[0] < 4 && datagram[4..8] == MAGIC_COOKIE
}

/// The local (our) ufrag of a STUN binding request, if the datagram is one and carries a
/// well-formed USERNAME attribute.
pub fn binding_request_local_ufrag(datagram: &[u8]) -> Option<&str> {
    if !is_stun(datagram) {
        return None;
    }
    let msg_type = u16::from_be_bytes([datagram[0], datagram[1]]);
    if msg_type != BINDING_REQUEST {
        return None;
    }
    let body_len = u16::from_be_bytes([datagram[2], datagram[3]]) as usize;
    let body = datagram.get(HEADER_LEN..HEADER_LEN.checked_add(body_len)?)?;
    let mut rest = body;
    while rest.len() >= 4 {
        let attr_type = u16::from_be_bytes([rest[0], rest[1]]);
        let attr_len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        let value = rest.get(4..4 + attr_len)?;
        if attr_type == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            let (local, _remote) = username.split_once(':')?;
            return (!local.is_empty()).then_some(local);
        }
        // Attributes are padded to 4 bytes.
        let padded = (4 + attr_len + 3) & !3;
        rest = rest.get(padded..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &[u8]) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username);
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        // A PRIORITY attribute after it, to check we walk past padding correctly.
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        let mut m = Vec::new();
        m.extend_from_slice(&BINDING_REQUEST.to_be_bytes());
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn finds_local_ufrag() {
        let m = binding_request(b"serverufrag:clientufrag");
        assert!(is_stun(&m));
        assert_eq!(binding_request_local_ufrag(&m), Some("serverufrag"));
    }

    #[test]
    fn refuses_malformed_input() {
        assert_eq!(binding_request_local_ufrag(b""), None);
        assert_eq!(binding_request_local_ufrag(&[0u8; 19]), None);
        assert_eq!(binding_request_local_ufrag(b"no-colon-here"), None);
        let m = binding_request(b"nocolon");
        assert_eq!(binding_request_local_ufrag(&m), None);
        let m = binding_request(b":remote");
        assert_eq!(binding_request_local_ufrag(&m), None);
        // Declared length longer than the datagram.
        let mut m = binding_request(b"a:b");
        m[3] = 0xff;
        assert_eq!(binding_request_local_ufrag(&m), None);
        // Truncated attribute.
        let m = binding_request(b"serverufrag:clientufrag");
        for cut in HEADER_LEN..m.len() {
            let mut t = m[..cut].to_vec();
            let len = (cut - HEADER_LEN) as u16;
            t[2..4].copy_from_slice(&len.to_be_bytes());
            let _ = binding_request_local_ufrag(&t);
        }
        // An RTP-looking packet is not STUN.
        assert!(!is_stun(&[0x80; 40]));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x1234_5678_u32;
        for len in 0..200 {
            let mut buf = vec![0u8; len];
            for b in buf.iter_mut() {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                *b = state as u8;
            }
            if len >= 8 {
                buf[0] = 0;
                buf[1] = 1;
                buf[4..8].copy_from_slice(&MAGIC_COOKIE);
            }
            let _ = binding_request_local_ufrag(&buf);
        }
    }
}
