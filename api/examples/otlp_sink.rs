//! An OTLP/gRPC receiver that takes every span and keeps none, for benchmarks that run the
//! service with tracing on (`api/benches/place_order.sh`). Prints its endpoint on the first
//! line, then, every few seconds, how many spans it has received.
//!
//!     cargo run --release --example otlp_sink

use std::time::Duration;

use fake_opentelemetry_collector::FakeCollectorServer;

#[tokio::main]
async fn main() {
    let mut collector = FakeCollectorServer::start()
        .await
        .expect("an OTLP receiver on a free port");
    println!("{}", collector.endpoint());
    let mut received = 0usize;
    let mut reported = tokio::time::Instant::now();
    loop {
        received += collector
            .exported_spans(1, Duration::from_millis(100))
            .await
            .len();
        if reported.elapsed() >= Duration::from_secs(5) {
            eprintln!("otlp_sink: {received} spans received");
            reported = tokio::time::Instant::now();
        }
    }
}
