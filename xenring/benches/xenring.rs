//! Benchmark harness for `xenring` (prints figures; not a timed test).
//!
//! `cargo bench -p xenring` prints:
//! * decode and encode cost per message for 50-byte and 4 KiB payloads;
//! * ring throughput between two threads (guest end producing xs_wire
//!   messages, server end consuming and decoding them), in MB/s and
//!   messages/s, for small and large messages.
//!
//! Set `XENRING_BENCH_SECS` to change the measuring time per figure
//! (default 1 s).

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xenring::codec::{encode, Decoder, Message};
use xenring::page::OwnedPage;
use xenring::{GuestEnd, MsgType, ServerEnd};

fn measure_secs() -> f64 {
    std::env::var("XENRING_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0)
}

/// Runs `f` (which does `batch` operations) until `secs` elapse; returns
/// nanoseconds per operation.
fn per_op(batch: u64, mut f: impl FnMut()) -> f64 {
    // Warm-up.
    for _ in 0..3 {
        f();
    }
    let budget = Duration::from_secs_f64(measure_secs());
    let start = Instant::now();
    let mut ops = 0u64;
    while start.elapsed() < budget {
        f();
        ops += batch;
    }
    start.elapsed().as_nanos() as f64 / ops as f64
}

fn codec(payload_len: usize) {
    let msg = Message::new(MsgType::Write, 1, 0, vec![b'x'; payload_len]).expect("within limit");
    // Keep the batch within 64 KiB so that the figure is the codec's cost,
    // not main-memory bandwidth (a daemon decodes bytes it just copied out
    // of a 1 KiB ring or a socket buffer, which are hot in cache).
    let batch = (65536 / msg.wire_len()).clamp(1, 1000);
    let mut stream = Vec::new();
    for _ in 0..batch {
        msg.encode_into(&mut stream);
    }
    let mut out = Vec::with_capacity(batch);
    let decode_ns = per_op(batch as u64, || {
        out.clear();
        let mut dec = Decoder::new();
        dec.decode_all(black_box(&stream), &mut out)
            .expect("valid stream");
        black_box(&out);
    });
    let mut buf = Vec::with_capacity(stream.len());
    let encode_ns = per_op(batch as u64, || {
        buf.clear();
        for _ in 0..batch {
            encode(&mut buf, MsgType::Write, 1, 0, black_box(&msg.payload)).expect("within limit");
        }
        black_box(&buf);
    });
    println!(
        "codec  payload {:>5} B: decode {:>8.1} ns/msg   encode {:>8.1} ns/msg",
        payload_len, decode_ns, encode_ns
    );
}

fn ring_throughput(payload_len: usize) {
    let page = Arc::new(OwnedPage::new());
    let stop = Arc::new(AtomicBool::new(false));
    let mut msg = Vec::new();
    encode(&mut msg, MsgType::Write, 1, 0, &vec![b'y'; payload_len]).expect("within limit");
    let msg_len = msg.len();

    let producer = {
        let page = Arc::clone(&page);
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let end = GuestEnd::new(page.ring());
            let mut off = 0;
            while !stop.load(Ordering::Relaxed) {
                match end.write(&msg[off..]) {
                    Ok(0) => std::hint::spin_loop(),
                    Ok(n) => off = (off + n) % msg_len,
                    Err(e) => panic!("ring error {e}"),
                }
            }
        })
    };

    let end = ServerEnd::new(page.ring());
    let mut dec = Decoder::new();
    let mut buf = [0u8; 1024];
    let mut out = Vec::new();
    let (mut bytes, mut msgs) = (0u64, 0u64);
    let budget = Duration::from_secs_f64(measure_secs());
    let start = Instant::now();
    while start.elapsed() < budget {
        for _ in 0..64 {
            let n = end.read(&mut buf).expect("consistent indices");
            if n == 0 {
                std::hint::spin_loop();
                continue;
            }
            bytes += n as u64;
            out.clear();
            dec.decode_all(&buf[..n], &mut out).expect("valid stream");
            msgs += out.len() as u64;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    producer.join().expect("producer thread");
    println!(
        "ring   payload {:>5} B: {:>8.1} MB/s   {:>10.0} msgs/s   (two threads, guest -> server, decoded)",
        payload_len,
        bytes as f64 / secs / 1e6,
        msgs as f64 / secs
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // useful either way: run quickly under test, fully under bench.
    let under_test = !std::env::args().any(|a| a == "--bench");
    if under_test {
        std::env::set_var("XENRING_BENCH_SECS", "0.01");
    }
    println!(
        "xenring benchmarks ({} s per figure; {} cores)",
        measure_secs(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    codec(50);
    codec(4096);
    ring_throughput(50);
    ring_throughput(4096);
}
