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
        assert_eq!(kind_of(rtc_kind(Kind::Video)), Kind::Video);
    }
}
