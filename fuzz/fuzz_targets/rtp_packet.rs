//! Any bytes as an RTP packet after SRTP (what a publisher's packet may be once decrypted): the
//! header view, its extensions and payload, the VP8/H.264 keyframe tests and the VP8 descriptor
//! parse never panic, and slices stay inside the packet.
#![no_main]
use libfuzzer_sys::fuzz_target;
use teleconsult_sfu::rtp::{self, RtpView};
use teleconsult_sfu::simulcast::{Vp8Ids, vp8_keyframe_size};

fuzz_target!(|data: &[u8]| {
    for view in [RtpView::parse(data), RtpView::parse_header(data)].into_iter().flatten() {
        let payload = view.payload(data);
        assert!(payload.len() <= data.len());
        let _ = view.is_padding_only();
        for id in 0..=15u8 {
            if let Some(e) = view.extension(data, id) {
                assert!(e.len() <= data.len());
            }
        }
        let _ = rtp::vp8_keyframe(payload);
        let _ = rtp::h264_keyframe(payload);
        let _ = vp8_keyframe_size(payload);
        if let Some(ids) = Vp8Ids::parse(payload) {
            if let Some((_, at, wide)) = ids.picture_id {
                assert!(at + if wide { 2 } else { 1 } <= payload.len());
            }
            if let Some((_, at)) = ids.tl0picidx {
                assert!(at < payload.len());
            }
        }
    }
});
