//! Cairn's placement benchmarks: a replica lookup through the partition table, side by side
//! with the baseline in the same run, the direct weighted rendezvous race over all nodes
//! (`Placement::replicas_uncached`, which also allocates its working memory), for 6, 64 and
//! 300 nodes. Also prints how long building each placement (fitting and table) took.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cairn_core::layout::{Layout, NodeSpec};
use cairn_core::placement::Placement;
use cairn_engine::Hash;
use criterion::{Criterion, criterion_group, criterion_main};

/// (nodes, zones) of each case; factor 3 throughout.
const CASES: [(usize, usize); 3] = [(6, 3), (64, 6), (300, 6)];
/// Distinct hashes cycled through, so lookups touch the table the way real traffic does.
const HASH_COUNT: usize = 1 << 14;

fn layout(nodes: usize, zones: usize) -> Layout {
    Layout {
        version: 1,
        replication_factor: 3,
        write_quorum: 2,
        nodes: (0..nodes)
            .map(|i| NodeSpec {
                id: format!("node-{i}"),
                addr: SocketAddr::from(([10, 0, (i / 256) as u8, (i % 256) as u8], 7401)).into(),
                zone: format!("zone-{}", i % zones),
                // Weights 1 to 4, as mixed disk sizes would give.
                weight: 1 + (i * 7 % 4) as u32,
            })
            .collect(),
    }
}

fn lookups(c: &mut Criterion) {
    let hashes: Vec<Hash> = (0..HASH_COUNT as u64)
        .map(|i| Hash::of(&i.to_le_bytes()))
        .collect();
    for (nodes, zones) in CASES {
        let layout = layout(nodes, zones);
        let started = Instant::now();
        let placement = Placement::new(&layout).expect("valid layout");
        eprintln!(
            "placement of {nodes} nodes in {zones} zones built in {:.0} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
        let mut group = c.benchmark_group(format!("lookup/{nodes}-nodes"));
        let mut next = 0usize;
        group.bench_function("table", |b| {
            b.iter(|| {
                next = (next + 1) % HASH_COUNT;
                black_box(placement.replicas(black_box(&hashes[next]))[0])
            })
        });
        group.bench_function("direct-race", |b| {
            b.iter(|| {
                next = (next + 1) % HASH_COUNT;
                black_box(placement.replicas_uncached(black_box(&hashes[next]))[0])
            })
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = lookups
}
criterion_main!(benches);
