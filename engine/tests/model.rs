//! Model-based property test: random sequences of put, streaming put, get, delete, compact,
//! sync, reopen and power-loss crash, checked against a `BTreeMap` after every step.
//!
//! Under `SyncMode::Always` every acknowledged operation must survive a crash exactly. Under
//! `SyncMode::Never` only what an explicit `sync` covered must survive; anything touched since
//! may come back in its old or new state, but never corrupt.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use cairn_engine::storage::MemStorage;
use cairn_engine::{Config, Hash, Store, SyncMode};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Put { content: u8 },
    StreamPut { content: u8, piece_bytes: usize },
    Get { content: u8 },
    Delete { content: u8 },
    Compact,
    Sync,
    Reopen,
    Crash { seed: u64 },
}

/// A pool of 24 contents, so that puts repeat (dedup) and deletes hit. Sizes span empty, small,
/// larger than a quarter segment (dedicated segments), and larger than the stream buffer.
fn content(id: u8) -> Vec<u8> {
    let len = match id % 6 {
        0 => 0,
        1 => 17,
        2 => 900,
        3 => 3_000,
        4 => 9_000,
        _ => 40_000 + usize::from(id) * 13,
    };
    let mut x = u32::from(id).wrapping_mul(0x9e37_79b9) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn op() -> impl Strategy<Value = Op> {
    let content = 0u8..24;
    prop_oneof![
        6 => content.clone().prop_map(|content| Op::Put { content }),
        2 => (content.clone(), 1usize..20_000).prop_map(|(content, piece_bytes)| Op::StreamPut { content, piece_bytes }),
        4 => content.clone().prop_map(|content| Op::Get { content }),
        3 => content.prop_map(|content| Op::Delete { content }),
        1 => Just(Op::Compact),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
        2 => any::<u64>().prop_map(|seed| Op::Crash { seed }),
    ]
}

const DIR: &str = "/model";

fn config(sync: SyncMode) -> Config {
    Config {
        segment_bytes: 16 * 1024,
        stream_buffer_bytes: 8 * 1024,
        sync,
        compact_live_ratio_below: 0.6,
        ..Config::default()
    }
}

fn open(mem: &MemStorage, sync: SyncMode) -> Store {
    Store::open_with(Arc::new(mem.clone()), Path::new(DIR), config(sync)).expect("the store opens")
}

fn run(ops: Vec<Op>, always: bool) -> Result<(), TestCaseError> {
    let sync = if always {
        SyncMode::Always
    } else {
        SyncMode::Never
    };
    let mut mem = MemStorage::new();
    let mut store = open(&mem, sync);
    let mut model: BTreeMap<Hash, Vec<u8>> = BTreeMap::new();
    // Hashes touched since the last point where everything was known durable.
    let mut touched: BTreeSet<Hash> = BTreeSet::new();
    let mut durable: BTreeMap<Hash, Vec<u8>> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Put { content: c } => {
                let data = content(c);
                let h = store.put(&data).expect("put");
                prop_assert_eq!(h, Hash::of(&data));
                model.insert(h, data);
                touched.insert(h);
            }
            Op::StreamPut {
                content: c,
                piece_bytes,
            } => {
                let data = content(c);
                let mut w = store.writer();
                for piece in data.chunks(piece_bytes) {
                    w.write(piece).expect("stream write");
                }
                let h = w.commit(Some(&Hash::of(&data))).expect("commit");
                model.insert(h, data);
                touched.insert(h);
            }
            Op::Get { content: c } => {
                let h = Hash::of(&content(c));
                let got = store.get(&h).expect("get");
                prop_assert_eq!(got.as_deref(), model.get(&h).map(Vec::as_slice));
            }
            Op::Delete { content: c } => {
                let h = Hash::of(&content(c));
                let was = store.delete(&h).expect("delete");
                prop_assert_eq!(was, model.remove(&h).is_some());
                touched.insert(h);
            }
            Op::Compact => {
                store.compact().expect("compact");
            }
            Op::Sync => {
                store.sync().expect("sync");
                durable = model.clone();
                touched.clear();
            }
            Op::Reopen => {
                drop(store);
                store = open(&mem, sync);
                durable = model.clone();
                touched.clear();
            }
            Op::Crash { seed } => {
                let crashed = mem.crash(seed);
                drop(store);
                mem = crashed;
                store = open(&mem, sync);
                if always {
                    durable = model.clone();
                    touched.clear();
                }
                // Whatever is present must be intact; what was durable and untouched since must
                // be exactly as it was.
                for h in store.list(&Hash::MIN, None, usize::MAX) {
                    let blob = store
                        .get(&h)
                        .expect("get after crash")
                        .expect("listed blobs exist");
                    prop_assert_eq!(Hash::of(&blob), h, "corrupt blob served after crash");
                }
                let mut recovered = BTreeMap::new();
                let all: BTreeSet<Hash> = durable
                    .keys()
                    .chain(model.keys())
                    .chain(touched.iter())
                    .copied()
                    .collect();
                for h in all {
                    let got = store.get(&h).expect("get after crash").map(|b| b.to_vec());
                    if !touched.contains(&h) {
                        prop_assert_eq!(
                            got.as_ref(),
                            durable.get(&h),
                            "durable state of {} lost",
                            h
                        );
                    }
                    if let Some(bytes) = got {
                        recovered.insert(h, bytes);
                    }
                }
                model = recovered;
                durable = model.clone();
                touched.clear();
            }
        }
        let stats = store.stats();
        prop_assert_eq!(stats.blob_count, model.len() as u64);
        prop_assert!(stats.used_bytes <= stats.capacity_bytes);
    }
    // Everything checks out at the end, also after one more clean reopen.
    drop(store);
    let store = open(&mem, sync);
    prop_assert_eq!(
        store.list(&Hash::MIN, None, usize::MAX),
        model.keys().copied().collect::<Vec<_>>()
    );
    for (h, data) in &model {
        let got = store.get(h).expect("final get");
        prop_assert_eq!(got.as_deref(), Some(data.as_slice()));
    }
    prop_assert!(store.scrub().expect("scrub").corrupt.is_empty());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(ops in proptest::collection::vec(op(), 1..80), always in any::<bool>()) {
        run(ops, always)?;
    }
}
