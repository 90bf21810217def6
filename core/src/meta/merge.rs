//! The merge rules of metadata: last writer wins by [`Stamp`], tombstones included, and the
//! merge of pages that several owners sent for one partition.

use std::collections::BTreeMap;

use super::hlc::Stamp;
use super::key::Entry;
use super::msg::Page;

/// Whether an entry stamped `incoming` replaces what is stored (stamped `stored`, if anything):
/// only a strictly newer stamp does, so replicas that receive the same writes in any order, any
/// number of times, end up equal.
pub fn supersedes(incoming: Stamp, stored: Option<Stamp>) -> bool {
    stored.is_none_or(|s| incoming > s)
}

/// Entries of a partition in key order, and where to go on from (`None`: the end).
pub type Merged = (Vec<(Vec<u8>, Entry)>, Option<Vec<u8>>);

/// Merges pages of one partition from several owners: the highest stamp per key, in key
/// order. A page cut short covers keys only up to its last one, so the merge is complete only
/// up to the smallest such key: entries past it are left out and that key is returned as the
/// place to go on from.
pub fn merge_pages(pages: Vec<Page>) -> Merged {
    let horizon: Option<Vec<u8>> = pages
        .iter()
        .filter(|p| p.truncated)
        .filter_map(|p| p.entries.last().map(|(k, _)| k.clone()))
        .min();
    let mut merged: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
    for page in pages {
        for (key, entry) in page.entries {
            if horizon.as_ref().is_some_and(|h| &key > h) {
                continue;
            }
            if supersedes(entry.stamp, merged.get(&key).map(|old| old.stamp)) {
                merged.insert(key, entry);
            }
        }
    }
    (merged.into_iter().collect(), horizon)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(wall_ms: u64, v: Option<&str>) -> Entry {
        Entry {
            stamp: Stamp {
                wall_ms,
                counter: 0,
                node: 0,
            },
            value: v.map(|v| v.as_bytes().to_vec()),
        }
    }

    fn page(entries: &[(&str, Entry)], truncated: bool) -> Page {
        Page {
            entries: entries
                .iter()
                .map(|(k, e)| (k.as_bytes().to_vec(), e.clone()))
                .collect(),
            truncated,
        }
    }

    #[test]
    fn the_newest_entry_of_each_key_wins_a_merge_tombstones_included() {
        let a = page(&[("a", e(1, Some("old"))), ("b", e(5, None))], false);
        let b = page(
            &[
                ("a", e(2, Some("new"))),
                ("b", e(4, Some("undeleted"))),
                ("c", e(1, Some("c"))),
            ],
            false,
        );
        let (merged, next) = merge_pages(vec![a, b]);
        assert_eq!(next, None);
        assert_eq!(
            merged,
            vec![
                (b"a".to_vec(), e(2, Some("new"))),
                (b"b".to_vec(), e(5, None)),
                (b"c".to_vec(), e(1, Some("c"))),
            ]
        );
    }

    #[test]
    fn a_merge_stops_where_the_shortest_cut_page_stops() {
        // Owner A's page was cut after "b"; owner B went further. "c" from B alone may be
        // stale (A's entry for "c" was not sent), so the merge ends at "b".
        let a = page(&[("a", e(1, Some("a"))), ("b", e(1, Some("b")))], true);
        let b = page(
            &[
                ("a", e(1, Some("a"))),
                ("c", e(1, Some("c"))),
                ("d", e(1, Some("d"))),
            ],
            true,
        );
        let (merged, next) = merge_pages(vec![a, b]);
        assert_eq!(next.as_deref(), Some(&b"b"[..]));
        let keys: Vec<_> = merged.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec![b"a".to_vec(), b"b".to_vec()]);
    }
}
