//! The codecs the core forwards, and the kind of a track in our terms and in `rtc`'s.

use crate::Kind;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;

/// The codecs we forward, as a copyable key (no string compare per packet).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Codec {
    Opus,
    Vp8,
    H264,
    Other,
}

impl Codec {
    pub(super) fn of(mime: &str) -> Codec {
        if mime.eq_ignore_ascii_case("audio/opus") {
            Codec::Opus
        } else if mime.eq_ignore_ascii_case("video/VP8") {
            Codec::Vp8
        } else if mime.eq_ignore_ascii_case("video/H264") {
            Codec::H264
        } else {
            Codec::Other
        }
    }
}

/// The payload type an RTX codec repairs: `apt=` of its format parameters (RFC 4588 §8.6).
pub(super) fn rtx_apt(fmtp: &str) -> Option<u8> {
    fmtp.split(';')
        .find_map(|p| p.trim().strip_prefix("apt="))
        .and_then(|v| v.trim().parse::<u8>().ok())
        .filter(|&pt| pt < 128)
}

pub(super) fn kind_of(kind: RtpCodecKind) -> Kind {
    match kind {
        RtpCodecKind::Audio => Kind::Audio,
        _ => Kind::Video,
    }
}

pub(super) fn rtc_kind(kind: Kind) -> RtpCodecKind {
    match kind {
        Kind::Audio => RtpCodecKind::Audio,
        Kind::Video => RtpCodecKind::Video,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codecs_are_recognised_whatever_the_case() {
        assert_eq!(Codec::of("audio/opus"), Codec::Opus);
        assert_eq!(Codec::of("audio/OPUS"), Codec::Opus);
        assert_eq!(Codec::of("video/vp8"), Codec::Vp8);
        assert_eq!(Codec::of("video/h264"), Codec::H264);
        assert_eq!(Codec::of("video/AV1"), Codec::Other);
        assert_eq!(kind_of(rtc_kind(Kind::Audio)), Kind::Audio);
        assert_eq!(rtx_apt("apt=96"), Some(96));
        assert_eq!(rtx_apt("rtx-time=3000; apt=102"), Some(102));
        assert_eq!(rtx_apt("apt=300"), None);
        assert_eq!(rtx_apt("apt=200"), None);
        assert_eq!(rtx_apt(""), None);
        assert_eq!(kind_of(rtc_kind(Kind::Video)), Kind::Video);
    }
}
