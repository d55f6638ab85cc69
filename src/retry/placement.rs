//! Which partition of a retry tier a destination's records go to.
//!
//! A tier consumer applies backpressure per partition: when one destination's queue is full, only
//! the partition whose head belongs to it is paused. That isolates destinations only if they do
//! not share partitions, so the parker chooses every tier record's partition itself instead of
//! leaving it to the key hash (six destinations hashed into six partitions share at least one
//! with probability 1 − 6!/6⁶ ≈ 98 %).
//!
//! [`assign`] spreads destinations over a topic's partitions: each destination prefers the
//! partition its name's FNV-1a hash points at, and takes the first partition at or after it (in
//! a ring) that holds the fewest destinations so far, visiting destinations in name order. So:
//! - with at least as many partitions as destinations, no two destinations share a partition;
//! - with fewer, every partition holds ⌊n/p⌋ or ⌈n/p⌉ destinations (they must share, and a dead
//!   destination then holds up the others on its partitions: see `docs/retries.md`);
//! - the result depends only on the set of names and the partition count, never on config order,
//!   so every process of a deployment computes the same placement. Adding or removing a
//!   destination can move others (those whose probe passed its slot); records already parked stay
//!   where they were written and are processed as they are.
//!
//! Correctness never depends on the placement: a tier consumer handles any mix of destinations in
//! any partition (records written before a config change, or by a build that partitioned by key).

use std::collections::HashMap;

/// Partition per destination for a topic with `partitions` partitions (see the module docs).
/// Names are deduplicated; `partitions` below 1 is treated as 1.
pub fn assign<S: AsRef<str>>(destinations: &[S], partitions: i32) -> HashMap<String, i32> {
    let partitions = partitions.max(1);
    let mut names: Vec<&str> = destinations.iter().map(AsRef::as_ref).collect();
    names.sort_unstable();
    names.dedup();
    let slots = usize::try_from(partitions).unwrap_or(1);
    let mut load = vec![0usize; slots];
    let mut placed = HashMap::with_capacity(names.len());
    for name in names {
        let fewest = load.iter().copied().min().unwrap_or(0);
        let preferred = usize::try_from(fnv1a(name.as_bytes()) % slots as u64).unwrap_or(0);
        let slot = (0..slots)
            .map(|k| (preferred + k) % slots)
            .find(|&s| load[s] == fewest)
            .unwrap_or(preferred);
        load[slot] += 1;
        placed.insert(name.to_string(), i32::try_from(slot).unwrap_or(0));
    }
    placed
}

/// 64-bit FNV-1a: a hash fixed by its definition, so placements agree across builds and
/// processes (std's hasher is randomly seeded per process).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The placement of every destination in every tier topic whose partition count is known.
/// Cloning is shallow.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    /// Topic → its partition count and destinations.
    by_topic: std::sync::Arc<HashMap<String, TopicPlacement>>,
}

/// One topic's partition count and destination → partition.
#[derive(Debug, Clone)]
struct TopicPlacement {
    partitions: i32,
    by_destination: HashMap<String, i32>,
}

impl Placement {
    /// Places `destinations` in each topic of `partitions` (topic → partition count).
    pub fn new<S: AsRef<str>>(destinations: &[S], partitions: &HashMap<String, i32>) -> Placement {
        let mut by_count: HashMap<i32, HashMap<String, i32>> = HashMap::new();
        let by_topic = partitions
            .iter()
            .map(|(topic, &count)| {
                let map = by_count
                    .entry(count)
                    .or_insert_with(|| assign(destinations, count))
                    .clone();
                (
                    topic.clone(),
                    TopicPlacement {
                        partitions: count,
                        by_destination: map,
                    },
                )
            })
            .collect();
        Placement {
            by_topic: std::sync::Arc::new(by_topic),
        }
    }

    /// The partition of `destination`'s records in `topic`; `None` (leave it to the key hash)
    /// for a topic or destination this placement does not know.
    pub fn partition(&self, topic: &str, destination: &str) -> Option<i32> {
        self.by_topic
            .get(topic)?
            .by_destination
            .get(destination)
            .copied()
    }

    /// The partition count of `topic` this placement was made for.
    pub fn partitions(&self, topic: &str) -> Option<i32> {
        self.by_topic.get(topic).map(|t| t.partitions)
    }

    /// Destinations that share a partition of `topic` with another one, by partition: empty
    /// when every destination has a partition of its own.
    pub fn shared(&self, topic: &str) -> Vec<(i32, Vec<String>)> {
        let Some(t) = self.by_topic.get(topic) else {
            return Vec::new();
        };
        let mut by_partition: HashMap<i32, Vec<String>> = HashMap::new();
        for (d, p) in &t.by_destination {
            by_partition.entry(*p).or_default().push(d.clone());
        }
        let mut shared: Vec<(i32, Vec<String>)> = by_partition
            .into_iter()
            .filter(|(_, ds)| ds.len() > 1)
            .map(|(p, mut ds)| {
                ds.sort();
                (p, ds)
            })
            .collect();
        shared.sort();
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("destination-{i}")).collect()
    }

    #[test]
    fn destinations_never_share_while_partitions_suffice() {
        for n in 1..=40 {
            for partitions in [n, n + 1, 2 * n, 64] {
                let placed = assign(&names(n), partitions as i32);
                assert_eq!(placed.len(), n);
                let used: HashSet<i32> = placed.values().copied().collect();
                assert_eq!(used.len(), n, "{n} destinations in {partitions} partitions");
                assert!(used.iter().all(|&p| p >= 0 && p < partitions as i32));
            }
        }
    }

    #[test]
    fn with_too_few_partitions_the_load_is_even() {
        for (n, partitions) in [(7, 6), (13, 6), (100, 7), (5, 1)] {
            let placed = assign(&names(n), partitions);
            let mut load = vec![0; partitions as usize];
            for p in placed.values() {
                load[*p as usize] += 1;
            }
            let (lo, hi) = (*load.iter().min().unwrap(), *load.iter().max().unwrap());
            assert!(hi - lo <= 1, "{n} in {partitions}: {load:?}");
        }
    }

    #[test]
    fn placement_ignores_config_order_and_duplicates() {
        let mut a = names(9);
        let placed = assign(&a, 12);
        a.reverse();
        a.push("destination-3".into());
        assert_eq!(assign(&a, 12), placed);
    }

    #[test]
    fn the_hash_is_fixed_by_definition() {
        // FNV-1a 64 test vectors (draft-eastlake-fnv): placements must not change across builds.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_placement_knows_its_topics_and_reports_sharing() {
        let counts = HashMap::from([("t-1m".to_string(), 2), ("t-2m".to_string(), 8)]);
        let p = Placement::new(&["a", "b", "c"], &counts);
        assert!(p.partition("t-1m", "a").is_some());
        assert_eq!(p.partitions("t-2m"), Some(8));
        assert_eq!(p.partitions("t-3m"), None);
        assert_eq!(p.partition("t-3m", "a"), None);
        assert_eq!(p.partition("t-1m", "zz"), None);
        assert!(p.shared("t-2m").is_empty());
        let shared = p.shared("t-1m");
        assert_eq!(shared.len(), 1, "{shared:?}");
        assert_eq!(shared[0].1.len(), 2);
    }
}
