//! Unit tests of the healer: pairs of healers over in-memory catalogs, run until quiet.

use std::collections::VecDeque;
use std::sync::Arc;

use super::*;
use crate::layout::{Layout, NodeSpec};
use crate::limits::PURGE_STEP_INTERVAL_MS;
use crate::testing::MemoryCatalog;

fn routing(ids: &[&str], factor: usize) -> Arc<Routing> {
    let layout = Layout {
        version: 1,
        replication_factor: factor,
        write_quorum: 1,
        nodes: ids
            .iter()
            .enumerate()
            .map(|(i, id)| NodeSpec {
                id: id.to_string(),
                addr: format!("127.0.0.1:{}", 7000 + i).parse().unwrap(),
                zone: format!("z{i}"),
                weight: 1,
            })
            .collect(),
    };
    Arc::new(Routing::new(layout).unwrap())
}

fn hash(i: u64) -> BlobHash {
    *blake3::hash(&i.to_le_bytes()).as_bytes()
}

/// Runs two healers until quiet, carrying out transfers at once. Returns the bytes of
/// messages exchanged (postcard) and the number of round trips.
fn run_pair(
    a: (&mut Healer, &mut MemoryCatalog),
    b: (&mut Healer, &mut MemoryCatalog),
    now_ms: u64,
) -> (usize, usize) {
    let (ha, ca) = a;
    let (hb, cb) = b;
    let mut bytes = 0;
    let mut requests = 0;
    let mut inbox: VecDeque<(bool, Action)> = ha
        .tick(now_ms, ca, &|_| true)
        .into_iter()
        .map(|x| (true, x))
        .collect();
    inbox.extend(
        hb.tick(now_ms, cb, &|_| true)
            .into_iter()
            .map(|x| (false, x)),
    );
    while let Some((from_a, action)) = inbox.pop_front() {
        let (me, my_cat, other, other_cat) = if from_a {
            (&mut *ha, &mut *ca, &mut *hb, &mut *cb)
        } else {
            (&mut *hb, &mut *cb, &mut *ha, &mut *ca)
        };
        let next: Vec<Action> = match action {
            Action::Send { msg, .. } => {
                bytes += postcard::to_allocvec(&msg).unwrap().len();
                if msg.is_request() {
                    requests += 1;
                }
                let id = me.self_id.clone();
                let out = other.on_message(now_ms, &id, msg, other_cat);
                inbox.extend(out.into_iter().map(|x| (!from_a, x)));
                continue;
            }
            Action::Transfer {
                id,
                direction,
                entry,
                ..
            } => {
                match direction {
                    Direction::Push => {
                        other_cat.entries.insert(entry.hash, (entry, now_ms));
                    }
                    Direction::Fetch => {
                        my_cat.entries.insert(entry.hash, (entry, now_ms));
                    }
                }
                me.on_transfer_done(now_ms, id, true, my_cat)
            }
            Action::ApplyTombstone { entry } => {
                my_cat.entries.insert(entry.hash, (entry, now_ms));
                Vec::new()
            }
            Action::DropLocal { hash } => {
                my_cat.entries.remove(&hash);
                Vec::new()
            }
            Action::ForgetVersion { entry } => {
                match entry.kind {
                    EntryKind::Tombstone => {
                        my_cat.entries.remove(&entry.hash);
                    }
                    EntryKind::Live => {
                        if let Some((e, _)) = my_cat.entries.get_mut(&entry.hash) {
                            e.version = 0;
                        }
                    }
                }
                Vec::new()
            }
        };
        inbox.extend(next.into_iter().map(|x| (from_a, x)));
    }
    (bytes, requests)
}

fn pair(n: u64) -> (Healer, MemoryCatalog, Healer, MemoryCatalog) {
    let r = routing(&["a", "b"], 2);
    let mut ca = MemoryCatalog::new("a", r.clone());
    for i in 0..n {
        let e = Entry::live(hash(i), 0, 100);
        ca.entries.insert(e.hash, (e, 0));
    }
    let cb = ca.clone_as("b");
    let ha = Healer::new("a", HealSettings::default(), r.clone(), 0);
    let hb = Healer::new("b", HealSettings::default(), r, 0);
    (ha, ca, hb, cb)
}

#[test]
fn identical_replicas_agree_in_one_request() {
    let (mut ha, mut ca, mut hb, mut cb) = pair(20_000);
    let (bytes, requests) = run_pair((&mut ha, &mut ca), (&mut hb, &mut cb), 1);
    assert_eq!(requests, 1);
    assert!(bytes < 100, "{bytes} bytes");
    assert_eq!(ha.synced_since_ms("b"), Some(1));
    assert_eq!(
        hb.synced_since_ms("a"),
        Some(1),
        "Done reached the responder"
    );
}

#[test]
fn missing_blobs_are_found_both_ways_without_listing_everything() {
    let (mut ha, mut ca, mut hb, mut cb) = pair(20_000);
    for i in 0..5 {
        ca.entries.remove(&hash(i * 1000));
        cb.entries.remove(&hash(i * 1000 + 7));
    }
    let (bytes, _) = run_pair((&mut ha, &mut ca), (&mut hb, &mut cb), 1);
    assert_eq!(ca.entries.len(), 20_000);
    assert_eq!(cb.entries.len(), 20_000);
    assert!(bytes < 64 * 1024, "{bytes} bytes for 10 differences");
}

#[test]
fn a_newer_tombstone_wins_and_a_newer_put_beats_it() {
    let (mut ha, mut ca, mut hb, mut cb) = pair(100);
    let t = Entry::tombstone(hash(1), 50);
    ca.entries.insert(t.hash, (t, 50));
    let revived = Entry::live(hash(2), 70, 100);
    cb.entries
        .insert(hash(2), (Entry::tombstone(hash(2), 60), 60));
    ca.entries.insert(hash(2), (revived, 70));
    run_pair((&mut ha, &mut ca), (&mut hb, &mut cb), 100);
    assert_eq!(cb.entry(&hash(1)), Some(t));
    assert_eq!(cb.entry(&hash(2)).unwrap().kind, EntryKind::Live);
    assert_eq!(ca.entry(&hash(2)).unwrap().kind, EntryKind::Live);
}

#[test]
fn tombstones_are_purged_after_grace_once_every_owner_synced() {
    let (mut ha, mut ca, mut hb, mut cb) = pair(10);
    let grace = HealSettings::default().tombstone_grace_ms;
    let t = Entry::tombstone(hash(3), 10);
    ca.entries.insert(t.hash, (t, 10));
    run_pair((&mut ha, &mut ca), (&mut hb, &mut cb), 20);
    assert_eq!(cb.entry(&hash(3)), Some(t));
    // Past the grace period: b's last sync with a began when b recorded the tombstone, so b
    // keeps it through this round; the round's session is a fresh sync.
    let later = 20 + grace + 1;
    run_pair((&mut ha, &mut ca), (&mut hb, &mut cb), later);
    assert!(cb.entry(&hash(3)).is_some());
    let later2 = later + PURGE_STEP_INTERVAL_MS;
    run_pair((&mut ha, &mut ca), (&mut hb, &mut cb), later2);
    assert!(ca.entry(&hash(3)).is_none());
    assert!(cb.entry(&hash(3)).is_none());
}

#[test]
fn misplaced_copies_are_handed_off_then_dropped() {
    // c leaves: a and b (factor 2 of 2) own everything; c's copies go to them.
    let r = routing(&["a", "b"], 2);
    let mut cc = MemoryCatalog::new("c", r.clone());
    for i in 0..50 {
        let e = Entry::live(hash(i), 0, 10);
        cc.entries.insert(e.hash, (e, 0));
    }
    let mut ca = MemoryCatalog::new("a", r.clone());
    let mut hc = Healer::new("c", HealSettings::default(), r.clone(), 0);
    let mut ha = Healer::new("a", HealSettings::default(), r, 0);
    // Only talk to a: b never confirms, so nothing is dropped.
    run_pair((&mut hc, &mut cc), (&mut ha, &mut ca), 1);
    assert_eq!(ca.entries.len(), 50);
    assert_eq!(cc.entries.len(), 50, "dropped before every owner held it");
}

/// The messages among `actions`.
fn sent(actions: Vec<Action>) -> Vec<HealMsg> {
    actions
        .into_iter()
        .filter_map(|a| match a {
            Action::Send { msg, .. } => Some(msg),
            _ => None,
        })
        .collect()
}

#[test]
fn duplicates_neither_answer_a_later_request_nor_move_a_sessions_start() {
    // a holds a tombstone b lacks: a's session reads the root leaf, then pushes the
    // tombstone. A second copy of the entries reply arrives while the push is outstanding.
    let (mut ha, mut ca, mut hb, cb) = pair(10);
    let t = Entry::tombstone(hash(100), 5);
    ca.entries.insert(t.hash, (t, 5));
    let summaries = sent(ha.tick(10, &ca, &|_| true));
    assert_eq!(summaries.len(), 1);
    let reply = sent(hb.on_message(10, "a", summaries[0].clone(), &cb));
    let entries = sent(ha.on_message(10, "b", reply[0].clone(), &ca));
    assert!(matches!(entries[0], HealMsg::Entries { .. }));
    let entries_reply = sent(hb.on_message(10, "a", entries[0].clone(), &cb));
    let push = sent(ha.on_message(10, "b", entries_reply[0].clone(), &ca));
    assert!(matches!(push[0], HealMsg::Tombstones { .. }));
    assert!(
        ha.on_message(10, "b", entries_reply[0].clone(), &ca)
            .is_empty(),
        "the duplicate is ignored"
    );
    // The real answer still completes the session, and the responder credits it from when
    // the session's first request arrived, not from when a duplicate of it did.
    hb.on_message(12, "a", summaries[0].clone(), &cb);
    let done = sent(ha.on_message(
        10,
        "b",
        HealMsg::TombstonesReply {
            session: push[0].session(),
        },
        &ca,
    ));
    assert!(matches!(done[..], [HealMsg::Done { .. }]));
    assert_eq!(ha.synced_since_ms("b"), Some(10));
    hb.on_message(13, "a", done[0].clone(), &cb);
    assert_eq!(hb.synced_since_ms("a"), Some(10));
}

#[test]
fn a_misplaced_entry_that_changed_meanwhile_is_not_dropped() {
    // c, outside the layout, offers a tombstone and a live copy; a put of the tombstone's
    // blob lands on c before the owners answer. c must keep that live copy (and offer it
    // afresh), while the other copy goes once pushed.
    let r = routing(&["a", "b"], 2);
    let t = Entry::tombstone(hash(1), 5);
    let other = Entry::live(hash(2), 5, 100);
    let mut cc = MemoryCatalog::new("c", r.clone());
    cc.entries.insert(t.hash, (t, 5));
    cc.entries.insert(other.hash, (other, 5));
    let (ca, cb) = (
        MemoryCatalog::new("a", r.clone()),
        MemoryCatalog::new("b", r.clone()),
    );
    let mut hc = Healer::new("c", HealSettings::default(), r.clone(), 0);
    let mut ha = Healer::new("a", HealSettings::default(), r.clone(), 0);
    let mut hb = Healer::new("b", HealSettings::default(), r, 0);
    let mut replies = Vec::new();
    for action in hc.tick(10, &cc, &|_| true) {
        if let Action::Send { to, msg } = action {
            let (h, c) = if to == "a" {
                (&mut ha, &ca)
            } else {
                (&mut hb, &cb)
            };
            let answer = sent(h.on_message(10, "c", msg, c));
            replies.extend(answer.into_iter().map(|m| (to.clone(), m)));
        }
    }
    assert_eq!(replies.len(), 2);
    let live = Entry::live(hash(1), 20, 100);
    cc.entries.insert(live.hash, (live, 20));
    let mut pushes = Vec::new();
    for (from, msg) in replies {
        for action in hc.on_message(20, &from, msg, &cc) {
            if let Action::Transfer { id, .. } = action {
                pushes.push(id);
            }
        }
    }
    assert_eq!(pushes.len(), 2, "both owners want the other copy");
    let mut dropped = Vec::new();
    for id in pushes {
        for action in hc.on_transfer_done(30, id, true, &cc) {
            if let Action::DropLocal { hash } = action {
                dropped.push(hash);
            }
        }
    }
    assert_eq!(dropped, vec![other.hash]);
    cc.entries.remove(&other.hash);
    let later = 30 + HealSettings::default().handoff_interval_ms;
    let offers = sent(hc.tick(later, &cc, &|_| true));
    assert_eq!(offers.len(), 2);
    for offer in offers {
        assert!(matches!(offer, HealMsg::Offer { entries, .. } if entries == [live]));
    }
}

#[test]
fn an_unreachable_peer_does_not_make_the_healer_spin() {
    let (mut ha, ca, _, _) = pair(10);
    ha.tick(0, &ca, &|_| false);
    assert!(
        ha.next_wake_ms(0) > 0,
        "nothing to do until the peer is back"
    );
    ha.on_peer_up(5, "b");
    assert_eq!(
        ha.next_wake_ms(5),
        5,
        "a peer that came back is due at once"
    );
}

/// Delivers messages among healers (indexed as `ids`) until none is left; every other
/// action is returned with the index of the healer that asked for it, not carried out.
fn deliver(
    healers: &mut [Healer],
    catalogs: &[MemoryCatalog],
    ids: &[&str],
    now_ms: u64,
    mut queue: VecDeque<(usize, Action)>,
) -> Vec<(usize, Action)> {
    let mut held = Vec::new();
    while let Some((from, action)) = queue.pop_front() {
        match action {
            Action::Send { to, msg } => {
                let t = ids.iter().position(|id| *id == to).unwrap();
                let out = healers[t].on_message(now_ms, ids[from], msg, &catalogs[t]);
                queue.extend(out.into_iter().map(|a| (t, a)));
            }
            other => held.push((from, other)),
        }
    }
    held
}

fn live_catalog(id: &str, r: &Arc<Routing>, n: u64) -> MemoryCatalog {
    let mut c = MemoryCatalog::new(id, r.clone());
    for i in 0..n {
        let e = Entry::live(hash(i), 0, 100);
        c.entries.insert(e.hash, (e, 0));
    }
    c
}

#[test]
fn after_a_peer_comes_back_the_larger_id_compares_once() {
    let (ha, ca, hb, cb) = pair(100);
    let ids = ["a", "b"];
    let (mut healers, catalogs) = ([ha, hb], [ca, cb]);
    assert!(!healers[1].initiates_with("a"));
    healers[1].on_peer_up(1, "a");
    let start = healers[1].tick(1, &catalogs[1], &|_| true);
    assert!(
        start
            .iter()
            .any(|a| matches!(a, Action::Send { to, .. } if to == "a"))
    );
    let queue = start.into_iter().map(|a| (1, a)).collect();
    assert!(deliver(&mut healers, &catalogs, &ids, 1, queue).is_empty());
    assert_eq!(healers[1].synced_since_ms("a"), Some(1));
    assert!(
        !healers[1].initiates_with("a"),
        "the regular sessions are a's: were b to start them too, both would copy every \
         difference"
    );
    let later = 1 + 10 * HealSettings::default().anti_entropy_interval_ms;
    let actions = healers[1].tick(later, &catalogs[1], &|_| true);
    assert!(!actions.iter().any(|a| matches!(a, Action::Send { .. })));
}

#[test]
fn a_repair_that_fails_asks_the_next_owner_once_each() {
    let r = routing(&["a", "b", "c"], 3);
    let catalog = MemoryCatalog::new("a", r.clone());
    let mut healer = Healer::new("a", HealSettings::default(), r, 0);
    let entry = Entry::live(hash(1), 5, 100);
    let fetch = |actions: Vec<Action>| -> Option<(u64, String)> {
        actions.into_iter().find_map(|a| match a {
            Action::Transfer {
                id,
                peer,
                direction: Direction::Fetch,
                ..
            } => Some((id, peer)),
            _ => None,
        })
    };
    healer.on_corrupt(1, entry, &|_| true);
    let (id, first) = fetch(healer.tick(1, &catalog, &|_| true)).expect("a fetch");
    // The first owner asked lacks the blob: the other is asked next.
    let (id, second) = fetch(healer.on_transfer_done(2, id, false, &catalog)).expect("retry");
    assert_ne!(first, second);
    // Both failed: nothing more until the damage is noticed again, which starts over.
    assert_eq!(fetch(healer.on_transfer_done(3, id, false, &catalog)), None);
    healer.on_corrupt(4, entry, &|_| true);
    assert!(fetch(healer.tick(4, &catalog, &|_| true)).is_some());
}

#[test]
fn a_blob_two_peers_hold_is_fetched_once() {
    let ids = ["a", "b", "c"];
    let r = routing(&ids, 3);
    let mut ca = live_catalog("a", &r, 50);
    ca.entries.remove(&hash(7));
    let catalogs = [ca, live_catalog("b", &r, 50), live_catalog("c", &r, 50)];
    let mut healers: Vec<Healer> = ids
        .iter()
        .map(|id| Healer::new(id, HealSettings::default(), r.clone(), 0))
        .collect();
    // a starts its sessions with b and c in the same tick; both find hash 7 missing.
    let start = healers[0].tick(1, &catalogs[0], &|_| true);
    let queue = start.into_iter().map(|a| (0, a)).collect();
    let held = deliver(&mut healers, &catalogs, &ids, 1, queue);
    let fetches = held
        .iter()
        .filter(|(_, a)| {
            matches!(a, Action::Transfer { direction: Direction::Fetch, entry, .. }
                if entry.hash == hash(7))
        })
        .count();
    assert_eq!(fetches, 1, "{held:?}");
}

#[test]
fn a_queued_fetch_of_a_blob_that_arrived_meanwhile_is_dropped() {
    let ids = ["a", "b"];
    let r = routing(&ids, 2);
    let mut ca = live_catalog("a", &r, 50);
    ca.entries.remove(&hash(7));
    ca.entries.remove(&hash(8));
    let mut catalogs = [ca, live_catalog("b", &r, 50)];
    let settings = HealSettings {
        transfers_in_flight_max: 1,
        ..HealSettings::default()
    };
    let mut healers: Vec<Healer> = ids
        .iter()
        .map(|id| Healer::new(id, settings.clone(), r.clone(), 0))
        .collect();
    let start = healers[0].tick(1, &catalogs[0], &|_| true);
    let queue = start.into_iter().map(|a| (0, a)).collect();
    let held = deliver(&mut healers, &catalogs, &ids, 1, queue);
    assert_eq!(held.len(), 1, "one copy at a time: {held:?}");
    let Action::Transfer { id, entry, .. } = held[0].1.clone() else {
        panic!("a transfer: {held:?}");
    };
    // The other blob arrives meanwhile (another owner pushed it), then the copy ends.
    let other = if entry.hash == hash(7) {
        hash(8)
    } else {
        hash(7)
    };
    for e in [entry, Entry::live(other, 0, 100)] {
        catalogs[0].entries.insert(e.hash, (e, 1));
    }
    let after = healers[0].on_transfer_done(1, id, true, &catalogs[0]);
    assert!(
        !after.iter().any(|a| matches!(a, Action::Transfer { .. })),
        "{after:?}"
    );
    assert!(
        after.iter().any(|a| matches!(
            a,
            Action::Send {
                msg: HealMsg::Done { .. },
                ..
            }
        )),
        "the session ends: {after:?}"
    );
    let p = healers[0].progress();
    assert_eq!(
        (p.moved_bytes, p.transfers_queued, p.transfers_in_flight),
        (100, 0, 0)
    );
}

#[test]
fn a_missing_copy_comes_from_its_designated_source_first() {
    let r = routing(&["a", "b", "c"], 3);
    let mut ha = Healer::new("a", HealSettings::default(), r.clone(), 0);
    let mut hb = Healer::new("b", HealSettings::default(), r.clone(), 0);
    let mut hc = Healer::new("c", HealSettings::default(), r.clone(), 0);
    // A blob whose copy for c should come from b, not a.
    let x = (0..1000)
        .map(|i| Entry::live(hash(i), 5, 10))
        .find(|e| ha.designated_source(&e.hash, "c").as_deref() == Some("b"))
        .expect("some hash names b first");
    let mut ca = MemoryCatalog::new("a", r.clone());
    ca.entries.insert(x.hash, (x, 0));
    let mut cb = ca.clone_as("b");
    let mut cc = MemoryCatalog::new("c", r);
    run_pair((&mut ha, &mut ca), (&mut hc, &mut cc), 1);
    assert!(cc.entry(&x.hash).is_none(), "a left the copy to b");
    assert_eq!(
        ha.synced_since_ms("c"),
        None,
        "a gap was left: no sync credit"
    );
    run_pair((&mut hb, &mut cb), (&mut hc, &mut cc), 2);
    assert!(
        cc.entry(&x.hash).is_some(),
        "b, the designated source, copied it"
    );
    assert_eq!(hb.synced_since_ms("c"), Some(2));
    // Had b not copied it, a would after one anti-entropy interval.
    let mut cc2 = MemoryCatalog::new("c", cc.routing().clone());
    let later = 1 + HealSettings::default().anti_entropy_interval_ms;
    ha.compare_now(later, "c");
    run_pair((&mut ha, &mut ca), (&mut hc, &mut cc2), later);
    assert!(
        cc2.entry(&x.hash).is_some(),
        "a copied once the gap outlived its wait"
    );
}

#[test]
fn throttle_paces_and_lets_large_copies_through() {
    let mut t = Throttle::new(1000, 0);
    assert!(t.try_take(0, 600));
    assert!(!t.try_take(0, 600));
    assert!(t.try_take(600, 600));
    let mut t = Throttle::new(1000, 0);
    assert!(t.try_take(0, 5000), "a full bucket lets a large copy start");
    assert!(!t.try_take(1000, 1));
    assert!(t.try_take(5001, 1));
}

#[test]
fn a_pass_counts_blobs_an_owner_that_is_not_up_lacks_once_across_their_owners() {
    // Three nodes, factor 3: every node owns every blob. With c down, a (first in placement
    // order among the up owners, for some blobs) and b (for the others) count each blob once.
    let r = routing(&["a", "b", "c"], 3);
    let up = |p: &str| p != "c";
    let mut total = 0;
    for id in ["a", "b"] {
        let catalog = live_catalog(id, &r, 40);
        let mut healer = Healer::new(id, HealSettings::default(), r.clone(), 0);
        let mut now = 0;
        while healer.progress().under_replicated.blobs == 0 && now < 10_000 {
            healer.tick(now, &catalog, &up);
            now += 100;
        }
        let under = healer.progress().under_replicated;
        assert_eq!(under.bytes, under.blobs * 100);
        assert_eq!(under.waiting_for.iter().collect::<Vec<_>>(), ["c"]);
        total += under.blobs;
    }
    // Blobs whose first up owner is c itself do not exist (c is down): a or b answers for all.
    assert_eq!(total, 40, "every blob counted once");
    // With everyone up, nothing is under-replicated.
    let catalog = live_catalog("a", &r, 40);
    let mut healer = Healer::new("a", HealSettings::default(), r.clone(), 0);
    for now in (0..2_000).step_by(100) {
        healer.tick(now, &catalog, &|_| true);
    }
    assert_eq!(
        healer.progress().under_replicated,
        UnderReplicated::default()
    );
}

#[test]
fn a_scrub_asked_for_on_a_node_whose_scrub_is_off_runs_one_pass() {
    let r = routing(&["a"], 1);
    let catalog = live_catalog("a", &r, 300);
    let off = HealSettings {
        scrub_bytes_per_sec: 0,
        ..HealSettings::default()
    };
    let mut scrubber = Scrubber::new(&off, None, 0);
    assert!(scrubber.step(0, &catalog).is_empty(), "off");
    assert!(!scrubber.start_now(10, 1 << 30), "nothing was under way");
    let mut verified = 0;
    let mut percent_seen = Vec::new();
    for now in 10..1_000 {
        verified += scrubber.step(now, &catalog).len();
        percent_seen.push(scrubber.pass_percent());
        scrubber.checked();
        if scrubber.passes_completed == 1 {
            break;
        }
    }
    assert_eq!(verified, 300);
    assert!(
        percent_seen.iter().any(|p| *p > 0 && *p < 100),
        "{percent_seen:?}"
    );
    assert!(!scrubber.running(2_000), "one pass only");
    assert!(scrubber.step(1_000_000, &catalog).is_empty(), "off again");
}
