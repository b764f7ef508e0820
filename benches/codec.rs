//! Micro-benchmarks for the wire format in `src/codec.rs`.
//!
//! Run with `cargo bench --bench codec`; `cargo bench --bench codec -- --test` runs each
//! benchmark once as a smoke test.

use std::hint::black_box;

use actor_chat::codec::{Event, Frame, LineCodec, Request};
use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tokio_util::codec::Decoder;

/// Lines in each benchmark's input.
const LINES: usize = 1000;
/// The server's default `limits.max_line_bytes`.
const MAX_LINE_BYTES: usize = 4096;

/// `LINES` typical direct messages of about 60 bytes each, `\n`-terminated.
fn talk_lines() -> Vec<u8> {
    let mut input = Vec::with_capacity(LINES * 64);
    for i in 0..LINES {
        // "talk|bob|" + 48 bytes of text + "\n" = 58..60 bytes.
        let line = format!("talk|bob|message {i:04} from alice: the quick brown fox\n");
        input.extend_from_slice(line.as_bytes());
    }
    input
}

/// Decodes every frame in `buf`, returning how many lines came out.
fn drain(codec: &mut LineCodec, buf: &mut BytesMut) -> usize {
    let mut lines = 0;
    while let Some(frame) = codec.decode(buf).expect("decoding never fails") {
        if let Frame::Line(line) = frame {
            black_box(&line);
            lines += 1;
        }
    }
    lines
}

fn decode_whole_buffer(c: &mut Criterion) {
    let input = talk_lines();
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("1000_talk_lines_one_buffer", |b| {
        b.iter_batched_ref(
            || BytesMut::from(&input[..]),
            |buf| {
                let mut codec = LineCodec::new(MAX_LINE_BYTES);
                let lines = drain(&mut codec, buf);
                assert_eq!(lines, LINES);
            },
            BatchSize::SmallInput,
        )
    });

    // The same bytes arriving in small reads, so most decode calls find no newline and resume
    // from the codec's scanned offset. 16-byte chunks split every line 3–4 times.
    for chunk in [16usize, 7] {
        group.bench_function(format!("1000_talk_lines_{chunk}_byte_chunks"), |b| {
            b.iter(|| {
                let mut codec = LineCodec::new(MAX_LINE_BYTES);
                let mut buf = BytesMut::with_capacity(256);
                let mut lines = 0;
                for piece in black_box(&input[..]).chunks(chunk) {
                    buf.extend_from_slice(piece);
                    lines += drain(&mut codec, &mut buf);
                }
                assert_eq!(lines, LINES);
            })
        });
    }
    group.finish();
}

fn parse_requests(c: &mut Criterion) {
    let input = talk_lines();
    let lines: Vec<&[u8]> = input
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .collect();
    let mixed: [&[u8]; 8] = [
        b"login|alice",
        b"talk|bob|hello there, how are you doing today? | all good",
        b"who",
        b"join|rust",
        b"say|rust|anyone around to review a pull request?",
        b"leave|rust",
        b"ping",
        b"dance|now",
    ];

    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("1000_talk_requests", |b| {
        b.iter(|| {
            for line in &lines {
                let _ = black_box(Request::parse(black_box(line)));
            }
        })
    });
    group.throughput(Throughput::Elements(mixed.len() as u64));
    group.bench_function("8_mixed_requests", |b| {
        b.iter(|| {
            for line in &mixed {
                let _ = black_box(Request::parse(black_box(line)));
            }
        })
    });
    group.finish();
}

fn encode_events(c: &mut Criterion) {
    let text = "message 0042 from alice: the quick brown fox jumps";
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(LINES as u64));
    group.bench_function("1000_talk_events_reused_buffer", |b| {
        let mut dst = BytesMut::with_capacity(LINES * 64);
        b.iter(|| {
            dst.clear();
            for _ in 0..LINES {
                let event = Event::Talk {
                    from: black_box("alice"),
                    text: black_box(text),
                };
                event.encode(&mut dst);
            }
            black_box(&dst);
        })
    });
    group.finish();
}

criterion_group!(benches, decode_whole_buffer, parse_requests, encode_events);
criterion_main!(benches);
