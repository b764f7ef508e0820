//! Fuzzes the line decoder and both parsers.
//!
//! Input layout: byte 0 sets the line limit (1..=256 bytes). Byte 1, taken modulo 9, is how
//! many of the following bytes are split points (0..=8); each one, scaled to the stream length,
//! marks a place where a read ends. The rest is the stream. It is fed to `LineCodec` in those
//! chunks, as reads from a socket would arrive, then finished with `decode_eof`. Every line must
//! be non-empty, within the limit and free of `\n`; at most an unfinished line may stay
//! buffered between reads; and every line must go through `Request::parse` and `Event::parse`
//! without panicking.
//!
//! Run with `cargo install cargo-fuzz && cargo +nightly fuzz run decode` from the repository
//! root.

#![no_main]

use actor_chat::codec::{Event, Frame, LineCodec, Request};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fn check(frame: Frame, max: usize) {
    if let Frame::Line(line) = frame {
        assert!(!line.is_empty(), "empty lines are skipped");
        assert!(
            line.len() <= max,
            "line of {} bytes over limit {max}",
            line.len()
        );
        assert!(!line.contains(&b'\n'), "newline inside a line");
        let _ = Request::parse(&line);
        let _ = Event::parse(&line);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(limit) + 1;
    let (cuts, stream) = match rest.split_first() {
        Some((&count, rest)) => {
            let count = usize::from(count % 9).min(rest.len());
            let (cuts, stream) = rest.split_at(count);
            (cuts, stream)
        }
        None => (&[][..], &[][..]),
    };
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|&c| usize::from(c) * (stream.len() + 1) / 256)
        .collect();
    points.push(stream.len());
    points.sort_unstable();

    let mut codec = LineCodec::new(max);
    let mut buf = BytesMut::new();
    let mut start = 0;
    for point in points {
        buf.extend_from_slice(&stream[start..point]);
        start = point;
        while let Some(frame) = codec.decode(&mut buf).expect("decoding never fails") {
            check(frame, max);
        }
        // Memory stays bounded: at most an unfinished line within the limit is kept.
        assert!(
            buf.len() <= max + 1,
            "buffered {} bytes, limit {max}",
            buf.len()
        );
    }
    while let Some(frame) = codec.decode_eof(&mut buf).expect("decoding never fails") {
        check(frame, max);
    }
    assert!(buf.is_empty(), "decode_eof leaves nothing behind");
});
