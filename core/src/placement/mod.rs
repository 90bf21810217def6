//! Placement: the one pure function from a blob's hash and a layout to the ordered list of nodes
//! that hold the blob. The client and every node call it, so they cannot disagree.
//!
//! # What it promises
//!
//! - **Zones.** The replicas of every blob lie in `min(replication_factor, zone_count)` distinct
//!   zones. When there are fewer zones than copies, every zone holds at least one copy and the
//!   remaining copies go to further distinct nodes.
//! - **Weights.** A node's share (the fraction of blobs it holds a copy of) is its target share,
//!   [`target_shares`]: `factor * w / W` where no zone rule binds, otherwise water-filled (zones
//!   or nodes that would exceed what the zone rule allows are held at that cap, zones that must
//!   hold a copy of every blob are raised to it, and the rest is shared in proportion to weight).
//! - **Consistency.** Adding or removing a node moves the copies that node gains or loses, plus
//!   what re-fitting the zone corrections moves between old nodes (below): in tests, 1.0 to 1.4
//!   times the minimum typically, at most 1.74 (four zones, factor 3); about 1.0 with factor 1
//!   or with as many zones as copies.
//! - **Speed.** A lookup is one table read ([`Placement::replicas`]).
//! - **Determinism.** Everything that decides placement uses integer arithmetic and IEEE-754
//!   `+ - * /` and `sqrt`, which are exactly rounded on every platform; logarithms and
//!   exponentials are computed here from those operations, never by the platform's maths library.
//!   Nodes are processed sorted by id, so the order of `nodes` in the layout does not matter.
//!
//! # How
//!
//! **Weighted rendezvous ("exponential race").** For a key, every node `i` draws
//! `E_i = -ln(u_i)`, with `u_i` a 64-bit mix of the key and a seed derived from the node's id, and
//! finishes at time `E_i / v_i`, where `v_i` is its rate. Nodes are walked in finishing order; a
//! node is taken if its zone holds no replica yet, until `min(factor, zones)` zones are used; then
//! the earliest untaken nodes fill the remaining places. The first finisher among a set of nodes
//! is node `i` with probability `v_i / sum(v)`, independent of when it finishes, so within a zone
//! the first node is exactly weight-proportional. Each node's draw depends only on the key and its
//! own id, so adding a node inserts it into each key's order without reordering the others: with
//! fixed rates, every changed assignment involves the added or removed node.
//!
//! **Zone corrections.** Taking the first `k` finishers of a race under-includes the fast ones
//! (sampling without replacement), so plain rates `v_i = w_i` miss the target shares. Once per
//! layout, rates are fitted: `v_i = w_i * m`, with one multiplier per zone when zones >= factor
//! (which keeps the exact proportionality within a zone) and one per node when zones < factor
//! (where the second and later copies in a zone are chosen by the race too). The inclusion
//! probability of every zone or node under the race is computed, not sampled: it is an integral
//! over the finishing time of a Poisson-binomial count of the others that finished earlier,
//! evaluated with the trapezoid rule in log-time (which converges geometrically for such smooth
//! integrands), with our own `exp`. Multipliers are updated by the odds ratio of target and
//! computed inclusion until they agree to 1e-9, then rounded to 32 significant bits. Nodes whose
//! target is 1 (a zone that must be in every blob, a node that must hold every blob) take rate
//! `w * 2^200` and always finish first; zones that may hold only the one copy the zone rule
//! forces take rate `w * 2^-200` and never supply a later copy.
//!
//! Re-fitting after a layout change moves the corrections slightly, and that moves some
//! assignments between old nodes: the price of exact shares. The extra is about `e_t - e_p`
//! times the minimum, where `e_t` and `e_p` are how strongly a zone's target share and its
//! uncorrected inclusion respond to its weight; it does not shrink as the cluster grows. Without
//! corrections the race moves exactly the minimum but misses target shares by up to 35%.
//!
//! **Partition table.** The race over hundreds of nodes takes about a microsecond. The hash
//! space is split into `PARTITION_COUNT` partitions by the hash's top `PARTITION_BITS` bits, and
//! each partition's replica list is the race for a key derived from the partition number,
//! computed once per layout. The partition count is a constant, never derived from the layout:
//! changing it would re-draw every partition. `2^20` partitions give a node of share `s` about
//! `s * 2^20` partitions, so the table's own noise is `1 / sqrt(s * 2^20)`: 0.7% for a node
//! holding 2% of blobs.
//!
//! **Order.** The replica list is ordered by the uncorrected race (`E_i / w_i`), so each replica
//! set's primary (the first) is chosen without regard to the zone corrections.
//! [`Placement::preference_list`] follows the replicas with the remaining nodes in race order.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use cairn_engine::Hash;

use crate::layout::{Layout, LayoutError};

mod detmath;
mod fit;

use detmath::{exponential_of_bits, mix64, one_minus_unit};
use fit::fit_multipliers;

/// Bits of the hash prefix that pick a partition.
pub const PARTITION_BITS: u32 = 20;
/// Partitions in the placement table. Part of the placement function: changing it re-places
/// every blob.
pub const PARTITION_COUNT: usize = 1 << PARTITION_BITS;

const _: () = assert!(PARTITION_BITS <= 32);

/// Mixed into node seeds, so placement seeds share nothing with other uses of node ids.
const NODE_SEED_DOMAIN: &[u8] = b"cairn placement node seed v1\0";
/// Mixed into partition keys.
const PARTITION_KEY_DOMAIN: u64 = 0x6361_6972_6e2d_7031;

/// Rate multiplier of nodes that must be in every replica set: ahead of every fitted node.
const ALWAYS_MULTIPLIER: f64 = f64::from_bits((1023 + 200) << 52);
/// Rate multiplier of nodes in zones that hold exactly one copy: behind every fitted node.
const LAST_MULTIPLIER: f64 = f64::from_bits((1023 - 200) << 52);
/// Bound on fitted multipliers (relative to their weighted mean), far inside the tiers above.
const FITTED_MULTIPLIER_MAX: f64 = f64::from_bits((1023 + 60) << 52);
const FITTED_MULTIPLIER_MIN: f64 = f64::from_bits((1023 - 60) << 52);
/// Fitting stops when every computed inclusion is within this relative error of its target.
const FIT_ERROR_MAX: f64 = 1e-9;
/// Fitting rounds at most; typical layouts need a few dozen.
const FIT_ROUNDS_MAX: usize = 400;
/// Most halvings of the fitting step.
const FIT_HALVINGS_MAX: u32 = 12;
/// Step of the trapezoid rule in `ln(time)`.
const GRID_STEP: f64 = 0.25;
/// Significant bits kept of each fitted multiplier.
const MULTIPLIER_BITS: u32 = 32;

/// The replica set and preference order of every blob under one layout.
#[derive(Clone, Debug)]
pub struct Placement {
    factor: usize,
    zone_count: usize,
    layout_version: u64,
    /// Per node in canonical (id) order:
    /// the node's index in `layout.nodes`,
    layout_index: Vec<u16>,
    /// the seed of its draws,
    seed: Vec<u64>,
    /// `1 / v_i`: the race's finishing time is `E_i * inv_rate[i]`,
    inv_rate: Vec<f64>,
    /// what the race's pass reads of every node, packed together.
    race_nodes: Vec<RaceNode>,
    /// `1 / w_i`: the order of a replica list is by `E_i * inv_weight[i]`.
    inv_weight: Vec<f64>,
    /// `factor` layout indices per partition.
    table: Vec<u16>,
}

/// What the race's pass reads of a node.
#[derive(Clone, Copy, Debug)]
struct RaceNode {
    seed: u64,
    /// `1 / v_i` shrunk by a relative 1e-12, for lower bounds that rounding cannot break.
    inv_rate_lower: f64,
    zone: u32,
}

/// Where a node stands before fitting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tier {
    /// Target 1: in every replica set.
    Always,
    /// Rate fitted to its target.
    Fitted,
    /// In a zone that holds exactly one copy of every blob: never supplies an extra copy.
    Last,
}

/// A layout's nodes in canonical order (sorted by id), with zones numbered in name order.
struct Canonical {
    layout_index: Vec<u16>,
    zone_of: Vec<usize>,
    zone_count: usize,
    weight: Vec<u64>,
    /// Nodes of each zone, ascending.
    zone_nodes: Vec<Vec<usize>>,
}

impl Canonical {
    fn new(layout: &Layout) -> Canonical {
        let mut order: Vec<usize> = (0..layout.nodes.len()).collect();
        order.sort_by(|&a, &b| layout.nodes[a].id.cmp(&layout.nodes[b].id));
        let zones: BTreeMap<&str, usize> = layout
            .nodes
            .iter()
            .map(|n| (n.zone.as_str(), 0))
            .collect::<BTreeMap<_, _>>()
            .into_keys()
            .enumerate()
            .map(|(index, zone)| (zone, index))
            .collect();
        let zone_of: Vec<usize> = order
            .iter()
            .map(|&i| zones[layout.nodes[i].zone.as_str()])
            .collect();
        let mut zone_nodes = vec![Vec::new(); zones.len()];
        for (node, &zone) in zone_of.iter().enumerate() {
            zone_nodes[zone].push(node);
        }
        Canonical {
            layout_index: order
                .iter()
                .map(|&i| u16::try_from(i).expect("at most NODES_MAX nodes"))
                .collect(),
            weight: order
                .iter()
                .map(|&i| u64::from(layout.nodes[i].weight))
                .collect(),
            zone_of,
            zone_count: zones.len(),
            zone_nodes,
        }
    }

    fn zone_weight(&self, zone: usize) -> u64 {
        self.zone_nodes[zone].iter().map(|&i| self.weight[i]).sum()
    }
}

/// Each node's target share: the fraction of blobs it should hold a copy of, indexed like
/// `layout.nodes`; the shares sum to `replication_factor`.
///
/// With at least as many zones as copies, a zone holds at most one copy of a blob, so a zone's
/// share is at most 1: zone shares are `min(1, c * W_z)` with `c` chosen so they sum to the
/// factor (zones are capped heaviest first), and a zone's share is split among its nodes in
/// proportion to weight. With fewer zones than copies, a node holds at most one copy and every
/// zone at least one: node shares are `min(1, c * w_i)`, except in zones whose total would fall
/// below 1, which hold exactly 1 split in proportion to weight; `c` makes the shares sum to the
/// factor. With no cap or floor binding, both reduce to `factor * w_i / W`.
pub fn target_shares(layout: &Layout) -> Result<Vec<f64>, LayoutError> {
    layout.validate()?;
    let canonical = Canonical::new(layout);
    let (share, _) = water_fill(&canonical, layout.replication_factor);
    let mut shares = vec![0.0; layout.nodes.len()];
    for (node, &s) in share.iter().enumerate() {
        shares[usize::from(canonical.layout_index[node])] = s;
    }
    Ok(shares)
}

/// Target share and tier of each canonical node.
fn water_fill(canonical: &Canonical, factor: usize) -> (Vec<f64>, Vec<Tier>) {
    let node_count = canonical.weight.len();
    let mut share = vec![0.0; node_count];
    let mut tier = vec![Tier::Fitted; node_count];
    if canonical.zone_count >= factor {
        let zone_weight: Vec<u64> = (0..canonical.zone_count)
            .map(|z| canonical.zone_weight(z))
            .collect();
        let mut order: Vec<usize> = (0..canonical.zone_count).collect();
        order.sort_by(|&a, &b| zone_weight[b].cmp(&zone_weight[a]).then(a.cmp(&b)));
        let mut factor_left = factor as u64;
        let mut weight_left: u64 = zone_weight.iter().sum();
        let mut capped = vec![false; canonical.zone_count];
        for &zone in &order {
            // Capped when its proportional part of what is left reaches 1 (exact in integers).
            if factor_left > 0 && factor_left * zone_weight[zone] >= weight_left {
                capped[zone] = true;
                factor_left -= 1;
                weight_left -= zone_weight[zone];
            } else {
                break;
            }
        }
        for zone in 0..canonical.zone_count {
            let zone_share = if capped[zone] {
                1.0
            } else {
                factor_left as f64 * zone_weight[zone] as f64 / weight_left as f64
            };
            for &node in &canonical.zone_nodes[zone] {
                share[node] = zone_share * canonical.weight[node] as f64 / zone_weight[zone] as f64;
                if capped[zone] {
                    tier[node] = Tier::Always;
                }
            }
        }
        return (share, tier);
    }

    // Fewer zones than copies. Total of the shares at scale `c`; nondecreasing in `c`.
    let total_at = |c: f64| -> f64 {
        (0..canonical.zone_count)
            .map(|zone| {
                let sum: f64 = canonical.zone_nodes[zone]
                    .iter()
                    .map(|&i| (c * canonical.weight[i] as f64).min(1.0))
                    .sum();
                sum.max(1.0)
            })
            .sum()
    };
    let weight_min = canonical.weight.iter().copied().min().expect("nodes") as f64;
    let (mut low, mut high) = (0.0, 1.0 / weight_min);
    for _ in 0..200 {
        let middle = 0.5 * (low + high);
        if middle <= low || middle >= high {
            break;
        }
        if total_at(middle) >= factor as f64 {
            high = middle;
        } else {
            low = middle;
        }
    }
    // Classify at the solution (with a margin for rounding), then solve the free part exactly.
    const MARGIN: f64 = 1e-9;
    let c = high;
    let mut fixed_total = 0.0;
    let mut free_weight = 0.0;
    for zone in 0..canonical.zone_count {
        let nodes = &canonical.zone_nodes[zone];
        let any_capped = nodes
            .iter()
            .any(|&i| c * canonical.weight[i] as f64 >= 1.0 - MARGIN);
        let sum: f64 = nodes
            .iter()
            .map(|&i| (c * canonical.weight[i] as f64).min(1.0))
            .sum();
        if !any_capped && sum <= 1.0 + MARGIN {
            let zone_weight = canonical.zone_weight(zone) as f64;
            for &node in nodes {
                tier[node] = Tier::Last;
                share[node] = canonical.weight[node] as f64 / zone_weight;
            }
            fixed_total += 1.0;
            continue;
        }
        for &node in nodes {
            if c * canonical.weight[node] as f64 >= 1.0 - MARGIN {
                tier[node] = Tier::Always;
                share[node] = 1.0;
                fixed_total += 1.0;
            } else {
                free_weight += canonical.weight[node] as f64;
            }
        }
    }
    if free_weight > 0.0 {
        let scale = (factor as f64 - fixed_total) / free_weight;
        for node in 0..node_count {
            if tier[node] == Tier::Fitted {
                share[node] = scale * canonical.weight[node] as f64;
            }
        }
    }
    (share, tier)
}

impl Placement {
    /// Fits the zone corrections for `layout` and computes the partition table: about 0.2 s for
    /// 6 nodes, 0.6 s for 64 and 1.3 s for 300 on two cores. Build once per layout version.
    pub fn new(layout: &Layout) -> Result<Placement, LayoutError> {
        layout.validate()?;
        let canonical = Canonical::new(layout);
        let factor = layout.replication_factor;
        let (share, tier) = water_fill(&canonical, factor);
        let multiplier = fit_multipliers(&canonical, factor, &share, &tier);
        let seed: Vec<u64> = canonical
            .layout_index
            .iter()
            .map(|&i| {
                let id = layout.nodes[usize::from(i)].id.as_bytes();
                Hash::of(&[NODE_SEED_DOMAIN, id].concat()).prefix_u64()
            })
            .collect();
        let mut placement = Placement {
            factor,
            zone_count: canonical.zone_count,
            layout_version: layout.version,
            race_nodes: (0..canonical.weight.len())
                .map(|i| RaceNode {
                    seed: seed[i],
                    inv_rate_lower: (1.0 - 1e-12) / (canonical.weight[i] as f64 * multiplier[i]),
                    zone: u32::try_from(canonical.zone_of[i]).expect("zones fit u32"),
                })
                .collect(),
            inv_rate: (0..canonical.weight.len())
                .map(|i| 1.0 / (canonical.weight[i] as f64 * multiplier[i]))
                .collect(),
            inv_weight: canonical.weight.iter().map(|&w| 1.0 / w as f64).collect(),
            layout_index: canonical.layout_index,
            seed,
            table: Vec::new(),
        };
        placement.table = placement.build_table();
        Ok(placement)
    }

    /// The partition a hash falls in: its top `PARTITION_BITS` bits.
    pub fn partition_of(hash: &Hash) -> u32 {
        (hash.prefix_u64() >> (64 - PARTITION_BITS)) as u32
    }

    /// The nodes holding `hash`, as indices into the layout's `nodes`: `replication_factor`
    /// distinct nodes, the primary first.
    pub fn replicas(&self, hash: &Hash) -> &[u16] {
        let start = Self::partition_of(hash) as usize * self.factor;
        &self.table[start..start + self.factor]
    }

    /// Every node in preference order for `hash`: [`Placement::replicas`] first, then the other
    /// nodes in race order (the fallbacks). Runs the race over every node, so costs
    /// microseconds.
    pub fn preference_list(&self, hash: &Hash) -> Vec<u16> {
        let key = partition_key(Self::partition_of(hash));
        let mut scratch = Scratch::new(self);
        self.race(key, &mut scratch);
        let draw = self.all_draws(key);
        let node_count = self.layout_index.len();
        let mut taken = vec![false; node_count];
        for &node in &scratch.chosen {
            taken[node as usize] = true;
        }
        let mut rest: Vec<u32> = (0..node_count as u32)
            .filter(|&i| !taken[i as usize])
            .collect();
        rest.sort_by_cached_key(|&i| FinishKey(draw[i as usize] * self.inv_rate[i as usize], i));
        scratch
            .chosen
            .iter()
            .chain(&rest)
            .map(|&i| self.layout_index[i as usize])
            .collect()
    }

    /// The same list as [`Placement::replicas`], computed by running the race instead of reading
    /// the table: the baseline the table is measured against, and a check of the table.
    pub fn replicas_uncached(&self, hash: &Hash) -> Vec<u16> {
        let mut scratch = Scratch::new(self);
        self.race(partition_key(Self::partition_of(hash)), &mut scratch);
        scratch
            .chosen
            .iter()
            .map(|&i| self.layout_index[i as usize])
            .collect()
    }

    /// Copies of every blob.
    pub fn replication_factor(&self) -> usize {
        self.factor
    }

    /// Number of nodes in the layout.
    pub fn node_count(&self) -> usize {
        self.layout_index.len()
    }

    /// The version of the layout this placement was built from.
    pub fn layout_version(&self) -> u64 {
        self.layout_version
    }

    /// The whole table: `replication_factor` layout indices per partition, in partition order.
    /// Two placements with equal tables place every blob identically.
    pub fn table(&self) -> &[u16] {
        &self.table
    }

    fn build_table(&self) -> Vec<u16> {
        let factor = self.factor;
        let mut table = vec![0u16; PARTITION_COUNT * factor];
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8);
        let partitions_per_thread = PARTITION_COUNT.div_ceil(threads);
        std::thread::scope(|scope| {
            for (chunk_index, chunk) in table.chunks_mut(partitions_per_thread * factor).enumerate()
            {
                scope.spawn(move || {
                    let first = chunk_index * partitions_per_thread;
                    let mut scratch = Scratch::new(self);
                    for (offset, slot) in chunk.chunks_exact_mut(factor).enumerate() {
                        let partition = u32::try_from(first + offset).expect("partition fits u32");
                        self.race(partition_key(partition), &mut scratch);
                        for (out, &node) in slot.iter_mut().zip(&scratch.chosen) {
                            *out = self.layout_index[node as usize];
                        }
                    }
                });
            }
        });
        table
    }

    /// Runs the race for `key`, leaving the replica set in `scratch.chosen` (canonical indices,
    /// in replica order).
    ///
    /// Exact, but skips the logarithm for nodes that cannot matter: `-ln(u) >= 1 - u`, so a
    /// node whose lower bound `(1 - u) / v` is above both its zone's best time so far and the
    /// time that currently decides the last place cannot change the result. Those times only
    /// fall as the pass goes on, so the skip is safe; typically only a few dozen nodes of
    /// hundreds need the logarithm.
    fn race(&self, key: u64, scratch: &mut Scratch) {
        let Scratch {
            draw,
            zone_best,
            zone_best_finish,
            top,
            chosen,
        } = scratch;
        zone_best_finish.fill(f64::INFINITY);
        top.clear();
        let spread = self.zone_count >= self.factor;
        // Zone-spread layouts: the `factor` zones with the earliest first finisher.
        // Otherwise: the `factor - zone_count` earliest nodes that are not their zone's first.
        let top_len = if spread {
            self.factor
        } else {
            self.factor - self.zone_count
        };
        // The time that decides the last place, once every place is held.
        let mut cutoff = f64::INFINITY;
        for (i, node) in self.race_nodes.iter().enumerate() {
            let bits = mix64(key ^ node.seed);
            let zone = node.zone as usize;
            let current = zone_best_finish[zone];
            let bound = if spread {
                current.min(cutoff)
            } else {
                current.max(cutoff)
            };
            if one_minus_unit(bits) * node.inv_rate_lower > bound {
                continue;
            }
            let e = exponential_of_bits(bits);
            draw[i] = e;
            let finish = e * self.inv_rate[i];
            let index = i as u32;
            // Nodes come in ascending index, so on equal times the earlier one stays first.
            if spread {
                if finish < current {
                    zone_best_finish[zone] = finish;
                    zone_best[zone] = index;
                    if let Some(position) = top.iter().position(|&z| z as usize == zone) {
                        top.remove(position);
                    }
                    let zone_key = |z: u32| (zone_best_finish[z as usize], zone_best[z as usize]);
                    insert_smallest(top, top_len, zone as u32, zone_key);
                    if top.len() == top_len {
                        cutoff = zone_best_finish[top[top_len - 1] as usize];
                    }
                }
            } else {
                let node_key = |n: u32| (draw[n as usize] * self.inv_rate[n as usize], n);
                if finish < current {
                    let displaced = zone_best[zone];
                    zone_best_finish[zone] = finish;
                    zone_best[zone] = index;
                    if current.is_finite() {
                        insert_smallest(top, top_len, displaced, node_key);
                    }
                } else {
                    insert_smallest(top, top_len, index, node_key);
                }
                if top.len() == top_len {
                    cutoff = node_key(top[top_len - 1]).0;
                }
            }
        }
        chosen.clear();
        if spread {
            chosen.extend(top.iter().map(|&z| zone_best[z as usize]));
        } else {
            chosen.extend_from_slice(&zone_best[..self.zone_count]);
            chosen.extend_from_slice(top);
        }
        assert_eq!(chosen.len(), self.factor, "every race fills every place");
        chosen.sort_by(|&a, &b| {
            compare(
                (draw[a as usize] * self.inv_weight[a as usize], a),
                (draw[b as usize] * self.inv_weight[b as usize], b),
            )
        });
    }

    /// Every node's exponential draw for `key`.
    fn all_draws(&self, key: u64) -> Vec<f64> {
        self.seed
            .iter()
            .map(|&seed| exponential_of_bits(mix64(key ^ seed)))
            .collect()
    }
}

/// Working memory of one race.
struct Scratch {
    draw: Vec<f64>,
    zone_best: Vec<u32>,
    zone_best_finish: Vec<f64>,
    /// Zones (zone-spread layouts) or extra nodes (otherwise) holding the last places so far.
    top: Vec<u32>,
    chosen: Vec<u32>,
}

impl Scratch {
    fn new(placement: &Placement) -> Scratch {
        Scratch {
            draw: vec![0.0; placement.layout_index.len()],
            zone_best: vec![0; placement.zone_count],
            zone_best_finish: vec![0.0; placement.zone_count],
            top: Vec::with_capacity(placement.factor + 1),
            chosen: Vec::with_capacity(placement.factor),
        }
    }
}

/// A finishing time and canonical index, ordered as `compare` orders them.
#[derive(Clone, Copy, PartialEq)]
struct FinishKey(f64, u32);

impl Eq for FinishKey {}

impl PartialOrd for FinishKey {
    fn partial_cmp(&self, other: &FinishKey) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for FinishKey {
    fn cmp(&self, other: &FinishKey) -> Ordering {
        compare((self.0, self.1), (other.0, other.1))
    }
}

/// Orders by time, then by canonical index (equal times are astronomically rare, but must be
/// decided the same way everywhere).
fn compare(a: (f64, u32), b: (f64, u32)) -> Ordering {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
}

/// Inserts `item` into `list`, kept sorted by `key` and at most `len_max` long.
fn insert_smallest(
    list: &mut Vec<u32>,
    len_max: usize,
    item: u32,
    key: impl Fn(u32) -> (f64, u32),
) {
    let item_key = key(item);
    if list.len() == len_max {
        let last = *list.last().expect("len_max >= 1");
        if compare(item_key, key(last)) != Ordering::Less {
            return;
        }
        list.pop();
    }
    let position = list
        .iter()
        .position(|&other| compare(item_key, key(other)) == Ordering::Less)
        .unwrap_or(list.len());
    list.insert(position, item);
}

/// The race key of a partition.
fn partition_key(partition: u32) -> u64 {
    mix64(u64::from(partition) ^ PARTITION_KEY_DOMAIN)
}

#[cfg(test)]
mod tests {
    use super::detmath::{exp, exponential_of_bits, ln, mix64};
    use super::fit::{extras_inclusion, top_k_inclusion};
    use super::*;
    use crate::layout::NodeSpec;

    fn layout(factor: usize, nodes: &[(&str, u32)]) -> Layout {
        Layout {
            version: 1,
            replication_factor: factor,
            write_quorum: 1,
            nodes: nodes
                .iter()
                .enumerate()
                .map(|(i, &(zone, weight))| NodeSpec {
                    id: format!("n{i}"),
                    addr: std::net::SocketAddr::from(([127, 0, 0, 1], 7400 + i as u16)).into(),
                    zone: zone.into(),
                    weight,
                })
                .collect(),
        }
    }

    fn assert_close(got: &[f64], want: &[f64], tolerance: f64) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= tolerance, "got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn ln_and_exp_match_the_platform() {
        let mut x = 1e-300;
        while x < 1e300 {
            let relative = (ln(x) - x.ln()).abs() / x.ln().abs().max(1e-300);
            assert!(
                relative < 1e-15 || (ln(x) - x.ln()).abs() < 1e-16,
                "ln({x})"
            );
            x *= 1.37;
        }
        let mut y = -700.0;
        while y < 700.0 {
            assert!((exp(y) / y.exp() - 1.0).abs() < 1e-14, "exp({y})");
            y += 0.173;
        }
        assert_eq!(exp(-800.0), 0.0);
    }

    #[test]
    fn draws_are_minus_ln() {
        for i in 0..100_000u64 {
            let bits = mix64(i);
            let u = ((bits >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
            let want = -u.ln();
            let got = exponential_of_bits(bits);
            assert!(
                (got - want).abs() <= 1e-15 + 1e-14 * want,
                "{u}: {got} {want}"
            );
        }
    }

    #[test]
    fn targets_without_binding_caps_are_proportional() {
        let l = layout(2, &[("a", 1), ("b", 2), ("c", 3), ("d", 4)]);
        assert_close(&target_shares(&l).unwrap(), &[0.2, 0.4, 0.6, 0.8], 1e-12);
    }

    #[test]
    fn targets_cap_a_heavy_zone() {
        // Zone a holds half the weight but may hold one copy of each blob only.
        let l = layout(3, &[("a", 3), ("a", 3), ("b", 2), ("c", 2), ("d", 2)]);
        assert_close(
            &target_shares(&l).unwrap(),
            &[0.5, 0.5, 2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0],
            1e-12,
        );
    }

    #[test]
    fn targets_with_fewer_zones_than_copies() {
        // One zone: nodes capped at 1, the rest proportional.
        let l = layout(3, &[("a", 1), ("a", 2), ("a", 3), ("a", 4)]);
        assert_close(
            &target_shares(&l).unwrap(),
            &[1.0 / 3.0, 2.0 / 3.0, 1.0, 1.0],
            1e-9,
        );
        // Zone b is light but must hold a copy of every blob.
        let l = layout(3, &[("a", 10), ("a", 10), ("a", 10), ("b", 1), ("b", 3)]);
        assert_close(
            &target_shares(&l).unwrap(),
            &[2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 0.25, 0.75],
            1e-9,
        );
    }

    #[test]
    fn computed_inclusion_sums_to_the_factor() {
        let p = top_k_inclusion(&[1.0, 2.0, 3.0, 4.0, 5.0], 2);
        assert!((p.iter().sum::<f64>() - 2.0).abs() < 1e-9, "{p:?}");
        // Exact for two items of three: P(a in first 2) = 1 - P(a last).
        let p = top_k_inclusion(&[1.0, 1.0, 2.0], 2);
        let a_last = (1.0 / 4.0) * (2.0 / 3.0) + (2.0 / 4.0) * (1.0 / 2.0);
        assert!((p[0] - (1.0 - a_last)).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn fitted_race_hits_its_targets_in_the_model() {
        let l = layout(3, &[("a", 1), ("a", 2), ("a", 3), ("b", 4), ("b", 2)]);
        let canonical = Canonical::new(&l);
        let (share, tier) = water_fill(&canonical, 3);
        let multiplier = fit_multipliers(&canonical, 3, &share, &tier);
        let rate: Vec<f64> = (0..5)
            .map(|i| match tier[i] {
                Tier::Always => f64::INFINITY,
                Tier::Last => 0.0,
                Tier::Fitted => canonical.weight[i] as f64 * multiplier[i],
            })
            .collect();
        let got = extras_inclusion(&canonical, &rate, 1);
        for i in 0..5 {
            if tier[i] == Tier::Fitted {
                assert!((got[i] / share[i] - 1.0).abs() < 1e-6, "{got:?} {share:?}");
            }
        }
    }

    /// The race as the module documentation defines it: walk all nodes in finishing order.
    fn naive_race(placement: &Placement, key: u64) -> Vec<u32> {
        let draw = placement.all_draws(key);
        let finish = |i: u32| (draw[i as usize] * placement.inv_rate[i as usize], i);
        let mut order: Vec<u32> = (0..placement.node_count() as u32).collect();
        order.sort_by(|&a, &b| compare(finish(a), finish(b)));
        let spread_zones = placement.factor.min(placement.zone_count);
        let mut used = vec![false; placement.zone_count];
        let mut chosen = Vec::new();
        for &node in &order {
            let zone = placement.race_nodes[node as usize].zone as usize;
            if chosen.len() < spread_zones && !used[zone] {
                used[zone] = true;
                chosen.push(node);
            }
        }
        for &node in &order {
            if chosen.len() < placement.factor && !chosen.contains(&node) {
                chosen.push(node);
            }
        }
        chosen.sort_by(|&a, &b| {
            let key = |i: u32| (draw[i as usize] * placement.inv_weight[i as usize], i);
            compare(key(a), key(b))
        });
        chosen
    }

    #[test]
    fn pruned_race_equals_the_naive_race() {
        let layouts = [
            layout(
                3,
                &[("a", 1), ("a", 2), ("b", 3), ("c", 4), ("c", 2), ("d", 1)],
            ),
            layout(3, &[("a", 1), ("a", 2), ("a", 3), ("a", 4)]),
            layout(3, &[("a", 10), ("a", 10), ("a", 10), ("b", 1), ("b", 3)]),
            layout(
                5,
                &[
                    ("a", 1),
                    ("b", 2),
                    ("a", 3),
                    ("b", 4),
                    ("a", 5),
                    ("b", 6),
                    ("c", 1),
                ],
            ),
            layout(2, &[("a", 3), ("a", 3), ("b", 2), ("c", 2), ("d", 2)]),
            layout(1, &[("a", 1), ("b", 400), ("c", 7)]),
        ];
        for l in &layouts {
            let placement = Placement::new(l).unwrap();
            let mut scratch = Scratch::new(&placement);
            for partition in 0..20_000 {
                let key = partition_key(partition);
                placement.race(key, &mut scratch);
                assert_eq!(scratch.chosen, naive_race(&placement, key), "{l:?}");
            }
        }
    }

    #[test]
    fn table_matches_the_race() {
        let l = layout(
            3,
            &[("a", 1), ("a", 2), ("b", 3), ("c", 4), ("c", 2), ("d", 1)],
        );
        let placement = Placement::new(&l).unwrap();
        for i in 0..2000u32 {
            let hash = Hash::of(&i.to_le_bytes());
            assert_eq!(
                placement.replicas(&hash),
                placement.replicas_uncached(&hash)
            );
            let preference = placement.preference_list(&hash);
            assert_eq!(&preference[..3], placement.replicas(&hash));
            let mut sorted = preference.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..6).collect::<Vec<u16>>());
        }
    }
}
