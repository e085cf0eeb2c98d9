//! Building one participant's media session (its `RTCPeerConnection`): codecs, interceptors,
//! ICE-lite on the shared socket with fixed credentials (our ufrag is the demultiplexing key).

use rand::Rng;
use rand::distributions::Alphanumeric;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::ice::tcp_type::TcpType;
use rtc::interceptor::Registry;
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::RTCPeerConnectionBuilder;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::configure_simulcast_extension_headers;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_RTX, MIME_TYPE_VP8, MediaEngine,
};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::rtp_transceiver::rtp_sender::{RTCPFeedback, RTCRtpHeaderExtensionCapability};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The transceiver index of each participant's own receiving sections (created in this order by
/// [`build`]): what a published track's section says of its [`Source`].
pub(crate) fn source_of_section(transceiver: usize) -> Option<crate::Source> {
    match transceiver {
        0 => Some(crate::Source::Microphone),
        1 => Some(crate::Source::Camera),
        2 => Some(crate::Source::Screen),
        _ => None,
    }
}

/// How long the selected pair may go without a STUN binding request from the client before the
/// session counts as `disconnected`. We are ICE-lite: we send no checks, and in `rtc` 0.21.1 only
/// inbound STUN refreshes the pair's last-heard time (RTP, RTCP and DTLS bypass the ICE agent,
/// and it offers no way to report them), so a call full of media looks silent between two consent
/// checks. Clients send those every ~2.5 s (Chromium) to 4–6 s (aiortc); `rtc`'s default of 5 s
/// flipped aiortc's sessions to disconnected every few seconds. 15 s is well above any client's
/// interval, and leaves room for a few lost checks.
pub const ICE_DISCONNECTED_TIMEOUT: Duration = Duration::from_secs(15);

/// Added to [`ICE_DISCONNECTED_TIMEOUT`] before the session counts as `failed` (`rtc` measures
/// both from the last STUN heard): 30 s in all, when RFC 7675 consent expires.
pub const ICE_FAILED_TIMEOUT: Duration = Duration::from_secs(15);

/// Random ICE credentials: (ufrag, password). The ufrag is 16 alphanumerics (RFC 8445 allows
/// 4..256 ice-chars), the password 32.
pub fn ice_credentials() -> (String, String) {
    let mut rng = rand::thread_rng();
    let ufrag: String = (&mut rng)
        .sample_iter(Alphanumeric)
        .take(16)
        .map(char::from)
        .collect();
    let pwd: String = (&mut rng)
        .sample_iter(Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    (ufrag, pwd)
}

fn video_feedback() -> Vec<RTCPFeedback> {
    [
        ("goog-remb", ""),
        ("ccm", "fir"),
        ("nack", ""),
        ("nack", "pli"),
    ]
    .into_iter()
    .map(|(typ, parameter)| RTCPFeedback {
        typ: typ.to_owned(),
        parameter: parameter.to_owned(),
    })
    .collect()
}

/// The codecs we forward: Opus; VP8 (Chrome, Firefox) and H.264 constrained baseline (Safari).
/// RTX where the other side takes it (see below).
fn media_engine() -> Result<MediaEngine, rtc::shared::error::Error> {
    let mut m = MediaEngine::default();
    m.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_OPUS.to_owned(),
                clock_rate: 48000,
                channels: 2,
                sdp_fmtp_line: "minptime=10;useinbandfec=1".to_owned(),
                rtcp_feedback: vec![],
            },
            payload_type: 111,
        },
        RtpCodecKind::Audio,
    )?;
    m.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_VP8.to_owned(),
                clock_rate: 90000,
                channels: 0,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: video_feedback(),
            },
            payload_type: 96,
        },
        RtpCodecKind::Video,
    )?;
    m.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: RTCRtpCodec {
                mime_type: MIME_TYPE_H264.to_owned(),
                clock_rate: 90000,
                channels: 0,
                sdp_fmtp_line:
                    "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
                        .to_owned(),
                rtcp_feedback: video_feedback(),
            },
            payload_type: 102,
        },
        RtpCodecKind::Video,
    )?;
    // RTX (RFC 4588) for both video codecs: publishers that take it repair on a stream of their
    // own (unwrapped in `core/media.rs`), and we answer a subscriber's NACK on its RTX stream
    // where its answer took it (else on the media SSRC, as every browser also accepts).
    for (payload_type, apt) in [(97, 96), (103, 102)] {
        m.register_codec(
            RTCRtpCodecParameters {
                rtp_codec: RTCRtpCodec {
                    mime_type: MIME_TYPE_RTX.to_owned(),
                    clock_rate: 90000,
                    channels: 0,
                    sdp_fmtp_line: format!("apt={apt}"),
                    rtcp_feedback: vec![],
                },
                payload_type,
            },
            RtpCodecKind::Video,
        )?;
    }
    Ok(m)
}

/// A new server-side peer connection for one participant, with our UDP host candidate (and the
/// passive ICE-TCP one when `tcp_addr` is set) and a
/// `recvonly` audio and video transceiver for what the participant publishes.
pub fn build(
    now: Instant,
    local_addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    ufrag: &str,
    pwd: &str,
) -> Result<RTCPeerConnection, rtc::shared::error::Error> {
    let mut media_engine = media_engine()?;
    // No interceptors: RTP and RTCP never enter `rtc`'s pipeline once DTLS is up (our own path,
    // `core/media.rs`, does NACK, reports and keyframe requests), so none of its interceptors
    // may produce RTCP of its own either: our SRTCP and `rtc`'s would share keys. Only the
    // header extensions are registered: MID (audio and video) for the subscribers' receivers,
    // and the transport-wide sequence number.
    let registry = Registry::new();
    configure_simulcast_extension_headers(&mut media_engine)?;
    media_engine.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: rtc::sdp::extmap::SDES_MID_URI.to_owned(),
        },
        RtpCodecKind::Audio,
        None,
    )?;
    // Transport-wide congestion control: publishers number every packet (the header
    // extension) and we send them feedback (`crate::twcc`), so their own send-side estimator
    // works through us.
    for kind in [RtpCodecKind::Audio, RtpCodecKind::Video] {
        media_engine.register_feedback(
            RTCPFeedback {
                typ: "transport-cc".to_owned(),
                parameter: String::new(),
            },
            kind,
        );
        media_engine.register_header_extension(
            RTCRtpHeaderExtensionCapability {
                uri: rtc::sdp::extmap::TRANSPORT_CC_URI.to_owned(),
            },
            kind,
            None,
        )?;
    }
    let settings = SettingEngineBuilder::new()
        .with_lite(true)
        .with_ice_credentials(ufrag.to_owned(), pwd.to_owned())
        .with_multicast_dns_mode(MulticastDnsMode::Disabled)
        // Keepalive: `rtc`'s default (an ICE-lite agent sends no checks anyway).
        .with_ice_timeouts(
            Some(ICE_DISCONNECTED_TIMEOUT),
            Some(ICE_FAILED_TIMEOUT),
            None,
        )
        .build();
    let mut pc = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_setting_engine(settings)
        .with_media_engine(media_engine)
        .with_interceptor_registry(registry)
        .build(now)?;
    let candidate = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".to_owned(),
            address: local_addr.ip().to_string(),
            port: local_addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()?;
    pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
    // ICE-TCP (RFC 6544): a passive candidate on the TCP port, after the UDP one (its lower
    // type preference makes clients prefer UDP when both work).
    if let Some(tcp) = tcp_addr {
        let candidate = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "tcp".to_owned(),
                address: tcp.ip().to_string(),
                port: tcp.port(),
                component: 1,
                ..Default::default()
            },
            tcp_type: TcpType::Passive,
        }
        .new_candidate_host()?;
        pc.add_local_candidate(RTCIceCandidate::from(&candidate).to_json()?)?;
    }
    pc.add_local_candidate(Default::default())?;
    // Our receiving sections, in the order `source_of_section` reads them: microphone, camera,
    // screen.
    for kind in [
        RtpCodecKind::Audio,
        RtpCodecKind::Video,
        RtpCodecKind::Video,
    ] {
        pc.add_transceiver_from_kind(
            kind,
            Some(RTCRtpTransceiverInit {
                direction: RTCRtpTransceiverDirection::Recvonly,
                streams: vec![],
                send_encodings: vec![],
            }),
        )?;
    }
    Ok(pc)
}
