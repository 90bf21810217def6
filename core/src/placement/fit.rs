//! Fitting the race's rates to the target shares: the inclusion probability of every zone or
//! node under the race is computed (not sampled) and the rate multipliers are updated until it
//! matches its target. See the module documentation of `placement` for the method.

use super::detmath::{exp, ln};
use super::{
    ALWAYS_MULTIPLIER, Canonical, FIT_ERROR_MAX, FIT_HALVINGS_MAX, FIT_ROUNDS_MAX,
    FITTED_MULTIPLIER_MAX, FITTED_MULTIPLIER_MIN, GRID_STEP, LAST_MULTIPLIER, MULTIPLIER_BITS,
    Tier,
};

/// Fits the rate multiplier of every canonical node so that the race's inclusion probabilities
/// equal the target shares.
pub(super) fn fit_multipliers(
    canonical: &Canonical,
    factor: usize,
    share: &[f64],
    tier: &[Tier],
) -> Vec<f64> {
    let node_count = share.len();
    let mut multiplier: Vec<f64> = tier
        .iter()
        .map(|t| match t {
            Tier::Always => ALWAYS_MULTIPLIER,
            Tier::Fitted => 1.0,
            Tier::Last => LAST_MULTIPLIER,
        })
        .collect();
    if canonical.zone_count >= factor {
        // One multiplier per zone; a zone's nodes share a tier.
        let zones: Vec<usize> = (0..canonical.zone_count)
            .filter(|&z| tier[canonical.zone_nodes[z][0]] == Tier::Fitted)
            .collect();
        let always_zones = canonical.zone_count - zones.len();
        let weight: Vec<f64> = zones
            .iter()
            .map(|&z| canonical.zone_weight(z) as f64)
            .collect();
        let target: Vec<f64> = zones
            .iter()
            .map(|&z| canonical.zone_nodes[z].iter().map(|&i| share[i]).sum())
            .collect();
        let fitted = fit(&weight, &target, |rate| {
            top_k_inclusion(rate, factor - always_zones)
        });
        for (&zone, &m) in zones.iter().zip(&fitted) {
            for &node in &canonical.zone_nodes[zone] {
                multiplier[node] = m;
            }
        }
    } else {
        let nodes: Vec<usize> = (0..node_count)
            .filter(|&i| tier[i] == Tier::Fitted)
            .collect();
        let weight: Vec<f64> = nodes.iter().map(|&i| canonical.weight[i] as f64).collect();
        let target: Vec<f64> = nodes.iter().map(|&i| share[i]).collect();
        let extra_count = factor - canonical.zone_count;
        let fitted = fit(&weight, &target, |rate| {
            let mut full_rate: Vec<f64> = tier
                .iter()
                .map(|t| match t {
                    Tier::Always => f64::INFINITY,
                    Tier::Fitted => 0.0,
                    Tier::Last => 0.0,
                })
                .collect();
            for (&node, &r) in nodes.iter().zip(rate) {
                full_rate[node] = r;
            }
            let inclusion = extras_inclusion(canonical, &full_rate, extra_count);
            nodes.iter().map(|&i| inclusion[i]).collect()
        });
        for (&node, &m) in nodes.iter().zip(&fitted) {
            multiplier[node] = m;
        }
    }
    multiplier
}

/// Fits multipliers `m` so that `inclusion(weight * m)` equals `target`; returns `m` rounded to
/// `MULTIPLIER_BITS` significant bits.
///
/// Each round multiplies `m` by the odds ratio of target and computed inclusion (inclusion is
/// roughly logistic in `ln(rate)`), damped to its `2^-halvings` power; a round that makes the
/// worst error grow is undone and the damping doubled. Items competing for few places (such as
/// five zones of six) are strongly coupled, and undamped steps would overshoot.
fn fit(weight: &[f64], target: &[f64], inclusion: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    let mut multiplier = vec![1.0; weight.len()];
    if weight.is_empty() {
        return multiplier;
    }
    let weight_sum: f64 = weight.iter().sum();
    let error_of = |multiplier: &[f64]| {
        let rate: Vec<f64> = weight.iter().zip(multiplier).map(|(w, m)| w * m).collect();
        let got = inclusion(&rate);
        let error = got
            .iter()
            .zip(target)
            .map(|(p, t)| (p / t - 1.0).abs())
            .fold(0.0, f64::max);
        (got, error)
    };
    let (mut got, mut error) = error_of(&multiplier);
    let mut halvings = 0;
    for _ in 0..FIT_ROUNDS_MAX {
        if error < FIT_ERROR_MAX {
            break;
        }
        let mut next = multiplier.clone();
        for ((m, &t), &p) in next.iter_mut().zip(target).zip(&got) {
            let mut ratio = ((t * (1.0 - p)) / (p * (1.0 - t))).clamp(1.0 / 16.0, 16.0);
            for _ in 0..halvings {
                ratio = ratio.sqrt();
            }
            *m *= ratio;
        }
        // Only ratios of multipliers matter: keep their weighted mean at 1.
        let mean = weight.iter().zip(&next).map(|(w, m)| w * m).sum::<f64>() / weight_sum;
        for m in &mut next {
            *m = (*m / mean).clamp(FITTED_MULTIPLIER_MIN, FITTED_MULTIPLIER_MAX);
        }
        let (next_got, next_error) = error_of(&next);
        if next_error < error {
            (multiplier, got, error) = (next, next_got, next_error);
        } else if halvings < FIT_HALVINGS_MAX {
            halvings += 1;
        } else {
            break;
        }
    }
    let drop_bits = 52 - (MULTIPLIER_BITS - 1);
    multiplier
        .iter()
        .map(|m| f64::from_bits(m.to_bits() & !((1u64 << drop_bits) - 1)))
        .collect()
}

/// Points `t` of the trapezoid rule in `ln(t)` covering every rate in `rate` (positive, finite),
/// with the rule's weight `t * GRID_STEP` of each.
pub(super) fn time_grid(rate: impl Iterator<Item = f64>) -> Vec<(f64, f64)> {
    let (low, high) = rate
        .filter(|r| r.is_finite() && *r > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), r| {
            (lo.min(r), hi.max(r))
        });
    if high == 0.0 {
        return Vec::new();
    }
    // Below t = 1e-12 / high every item is almost surely still running, and above 45 / low
    // almost surely finished; both tails are below 1e-11.
    let first = ln(1e-12 / high);
    let last = ln(45.0 / low);
    let steps = ((last - first) / GRID_STEP) as usize + 1;
    (0..=steps)
        .map(|k| {
            let t = exp(first + k as f64 * GRID_STEP);
            (t, t * GRID_STEP)
        })
        .collect()
}

/// Multiplies a truncated count distribution by one Bernoulli item: `P(finished) = 1 - q`.
fn add_item(from: &[f64], q: f64, to: &mut [f64]) {
    let p = 1.0 - q;
    to[0] = from[0] * q;
    for c in 1..to.len() {
        to[c] = from[c] * q + from[c - 1] * p;
    }
}

/// Convolution of two truncated count distributions.
fn convolve(a: &[f64], b: &[f64], to: &mut [f64]) {
    for c in 0..to.len() {
        to[c] = (0..=c).map(|x| a[x] * b[c - x]).sum();
    }
}

/// Prefix and suffix products of truncated count distributions of `len` counts: `prefix[j]` is
/// the distribution over items `< j`, `suffix[j]` over items `>= j`.
fn prefix_suffix(
    count: usize,
    len: usize,
    item: impl Fn(usize, &[f64], &mut [f64]),
) -> (Vec<f64>, Vec<f64>) {
    let mut prefix = vec![0.0; (count + 1) * len];
    let mut suffix = vec![0.0; (count + 1) * len];
    prefix[0] = 1.0;
    suffix[count * len] = 1.0;
    for j in 0..count {
        let (done, rest) = prefix.split_at_mut((j + 1) * len);
        item(j, &done[j * len..], &mut rest[..len]);
    }
    for j in (0..count).rev() {
        let (rest, done) = suffix.split_at_mut((j + 1) * len);
        item(j, &done[..len], &mut rest[j * len..]);
    }
    (prefix, suffix)
}

/// Probability that each item is among the first `k` to finish when item `j` finishes at an
/// exponential time of rate `rate[j]`.
///
/// `P(j in first k) = integral of rate_j e^(-rate_j t) P(fewer than k others finished by t) dt`.
pub(super) fn top_k_inclusion(rate: &[f64], k: usize) -> Vec<f64> {
    let count = rate.len();
    if k == 0 {
        return vec![0.0; count];
    }
    if k >= count {
        return vec![1.0; count];
    }
    let mut inclusion = vec![0.0; count];
    let mut q = vec![0.0; count];
    for (t, step) in time_grid(rate.iter().copied()) {
        for (q, &r) in q.iter_mut().zip(rate) {
            *q = exp(-r * t);
        }
        let (prefix, suffix) = prefix_suffix(count, k, |j, from, to| add_item(from, q[j], to));
        for j in 0..count {
            let before = &prefix[j * k..(j + 1) * k];
            let after = &suffix[(j + 1) * k..(j + 2) * k];
            let mut fewer = 0.0;
            for a in 0..k {
                fewer += before[a] * after[..k - a].iter().sum::<f64>();
            }
            inclusion[j] += step * rate[j] * q[j] * fewer;
        }
    }
    inclusion
}

/// With fewer zones than copies: the probability that each node is chosen, when every zone's
/// first finisher is chosen and then the first `extra_count` of the other nodes. `rate[i]` is
/// infinite for nodes that finish at once and 0 for nodes that finish after every other.
/// Returned for nodes of finite positive rate only (others 0).
///
/// Node `i` finishing at `t` is chosen if no other node of its zone finished before it, or if
/// fewer than `extra_count` non-first nodes (over all zones, counted from the other nodes)
/// finished before it.
pub(super) fn extras_inclusion(
    canonical: &Canonical,
    rate: &[f64],
    extra_count: usize,
) -> Vec<f64> {
    let node_count = rate.len();
    let zone_count = canonical.zone_count;
    let len = extra_count + 1; // arrivals 0..=extra_count within a zone
    let mut inclusion = vec![0.0; node_count];
    let mut q = vec![0.0; node_count];
    let mut excess = vec![0.0; zone_count * extra_count];
    let mut within = vec![0.0; len];
    for (t, step) in time_grid(rate.iter().copied()) {
        for (q, &r) in q.iter_mut().zip(rate) {
            *q = if r.is_infinite() { 0.0 } else { exp(-r * t) };
        }
        // Per zone: prefix and suffix arrival distributions over its nodes.
        let zone_tables: Vec<(Vec<f64>, Vec<f64>)> = canonical
            .zone_nodes
            .iter()
            .map(|nodes| prefix_suffix(nodes.len(), len, |j, f, to| add_item(f, q[nodes[j]], to)))
            .collect();
        // Per zone: distribution of its non-first arrivals, `excess = max(0, arrivals - 1)`.
        for (zone, (prefix, _)) in zone_tables.iter().enumerate() {
            let n = canonical.zone_nodes[zone].len();
            let arrivals = &prefix[n * len..(n + 1) * len];
            let out = &mut excess[zone * extra_count..(zone + 1) * extra_count];
            out[0] = arrivals[0] + arrivals[1];
            out[1..].copy_from_slice(&arrivals[2..=extra_count]);
        }
        let (zone_prefix, zone_suffix) = prefix_suffix(zone_count, extra_count, |z, f, to| {
            let mut product = vec![0.0; extra_count];
            convolve(
                f,
                &excess[z * extra_count..(z + 1) * extra_count],
                &mut product,
            );
            to.copy_from_slice(&product);
        });
        let mut others = vec![0.0; extra_count];
        for (zone, (prefix, suffix)) in zone_tables.iter().enumerate() {
            // P(excess of the other zones <= x), for x < extra_count.
            convolve(
                &zone_prefix[zone * extra_count..(zone + 1) * extra_count],
                &zone_suffix[(zone + 1) * extra_count..(zone + 2) * extra_count],
                &mut others,
            );
            let mut at_most = others.clone();
            for x in 1..extra_count {
                at_most[x] += at_most[x - 1];
            }
            for (j, &node) in canonical.zone_nodes[zone].iter().enumerate() {
                if !(rate[node].is_finite() && rate[node] > 0.0) {
                    continue;
                }
                convolve(
                    &prefix[j * len..(j + 1) * len],
                    &suffix[(j + 1) * len..(j + 2) * len],
                    &mut within,
                );
                // First in its zone, or a non-first with room left among the extras.
                let mut chosen = within[0];
                for a in 1..=extra_count {
                    chosen += within[a] * at_most[extra_count - a];
                }
                inclusion[node] += step * rate[node] * q[node] * chosen;
            }
        }
    }
    inclusion
}
