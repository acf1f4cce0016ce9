//! Caches of computed features, so that scrubbing t or the block, or reopening a session, never
//! computes the same thing twice.
//!
//! [`FeatureCache`] holds feature maps keyed by everything that determines them ([`FeatureKey`]),
//! within a memory budget: when a new map would exceed it, the least recently used maps leave
//! first. With a folder it also keeps every map on disk as a `.safetensors` file (one `[C,h,w]`
//! tensor named `features`, the key in `__metadata__`), so a later run finds them again.
//! [`BoundedCache`] is a small count-bounded LRU for the clean latents and prompt embeddings.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, WithPath};
use crate::features::map::FeatureMap;
use crate::io::safetensors::{read_metadata, write_f32};

/// Content identity of an image: FNV-1a of its size and RGB bytes.
pub type ImageKey = u64;

/// FNV-1a, 64 bit: a stable hash (std's hasher may change between Rust releases, and keys name
/// files on disk).
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>, seed: u64) -> u64 {
    let mut hash = seed;
    for b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// Everything that determines a feature map.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FeatureKey {
    /// The model's folder (after resolving `default` and caches).
    pub model: String,
    pub image: ImageKey,
    /// The size the image was resized to, or None for its own size.
    pub size: Option<(u32, u32)>,
    pub t: usize,
    pub tap: String,
    pub ensemble: usize,
    pub seed: u64,
    pub prompt: String,
}

impl FeatureKey {
    /// True when `other` differs from `self` at most in t and tap.
    pub fn same_but_t_and_tap(&self, other: &FeatureKey) -> bool {
        self.model == other.model
            && self.image == other.image
            && self.size == other.size
            && self.ensemble == other.ensemble
            && self.seed == other.seed
            && self.prompt == other.prompt
    }

    /// The same key at another t and tap.
    pub fn at(&self, t: usize, tap: &str) -> FeatureKey {
        FeatureKey {
            t,
            tap: tap.to_string(),
            ..self.clone()
        }
    }

    fn fields(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert("model".into(), self.model.clone());
        m.insert("image".into(), format!("{:016x}", self.image));
        m.insert(
            "size".into(),
            self.size
                .map_or("original".into(), |(w, h)| format!("{w}x{h}")),
        );
        m.insert("t".into(), self.t.to_string());
        m.insert("tap".into(), self.tap.clone());
        m.insert("ensemble".into(), self.ensemble.to_string());
        m.insert("seed".into(), self.seed.to_string());
        m.insert("prompt".into(), self.prompt.clone());
        m
    }

    fn from_fields(m: &HashMap<String, String>) -> Option<FeatureKey> {
        let size = match m.get("size")?.as_str() {
            "original" => None,
            s => {
                let (w, h) = s.split_once('x')?;
                Some((w.parse().ok()?, h.parse().ok()?))
            }
        };
        Some(FeatureKey {
            model: m.get("model")?.clone(),
            image: u64::from_str_radix(m.get("image")?, 16).ok()?,
            size,
            t: m.get("t")?.parse().ok()?,
            tap: m.get("tap")?.clone(),
            ensemble: m.get("ensemble")?.parse().ok()?,
            seed: m.get("seed")?.parse().ok()?,
            prompt: m.get("prompt")?.clone(),
        })
    }

    /// The file name of this key in a disk cache.
    pub fn file_name(&self) -> String {
        let text: String = self
            .fields()
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect();
        format!("{:016x}.safetensors", fnv1a(text.bytes(), FNV_OFFSET))
    }
}

struct Entry {
    map: FeatureMap,
    last_used: u64,
}

/// Feature maps in memory within a byte budget (least recently used leave first), optionally
/// mirrored on disk.
pub struct FeatureCache {
    entries: HashMap<FeatureKey, Entry>,
    bytes: usize,
    budget: usize,
    clock: u64,
    disk: Option<PathBuf>,
    /// Keys whose files are in the disk folder.
    on_disk: HashSet<FeatureKey>,
}

fn map_bytes(map: &FeatureMap) -> usize {
    map.data.len() * std::mem::size_of::<f32>()
}

impl FeatureCache {
    /// A memory-only cache of at most `budget` bytes of features.
    pub fn new(budget: usize) -> Self {
        Self {
            entries: HashMap::new(),
            bytes: 0,
            budget,
            clock: 0,
            disk: None,
            on_disk: HashSet::new(),
        }
    }

    /// Also keep every map in `dir` (created if missing); the maps already there are indexed.
    pub fn with_disk(budget: usize, dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_path(dir)?;
        let mut cache = Self::new(budget);
        for entry in std::fs::read_dir(dir).with_path(dir)? {
            let path = entry.with_path(dir)?.path();
            if path.extension().is_some_and(|e| e == "safetensors") {
                // Files that are not ours, or damaged, are skipped: the cache is only a cache.
                if let Some(key) = read_key(&path) {
                    if path.file_name().and_then(|n| n.to_str()) == Some(&key.file_name()) {
                        cache.on_disk.insert(key);
                    }
                }
            }
        }
        cache.disk = Some(dir.to_path_buf());
        Ok(cache)
    }

    /// Bytes of features held in memory.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Number of maps held in memory.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether the map is in memory or on disk.
    pub fn contains(&self, key: &FeatureKey) -> bool {
        self.entries.contains_key(key) || self.on_disk.contains(key)
    }

    /// The map, from memory or else from disk (then kept in memory too). A damaged disk file is
    /// an error naming the file; it is dropped from the index so it will be computed again.
    pub fn get(&mut self, key: &FeatureKey) -> Result<Option<FeatureMap>> {
        self.clock += 1;
        if let Some(entry) = self.entries.get_mut(key) {
            entry.last_used = self.clock;
            return Ok(Some(entry.map.clone()));
        }
        let Some(dir) = self.disk.as_ref().filter(|_| self.on_disk.contains(key)) else {
            return Ok(None);
        };
        let path = dir.join(key.file_name());
        match read_map(&path) {
            Ok(map) => {
                self.remember(key.clone(), map.clone());
                Ok(Some(map))
            }
            Err(e) => {
                self.on_disk.remove(key);
                Err(e)
            }
        }
    }

    /// Keep a map (and write it to disk when the cache has a folder).
    pub fn insert(&mut self, key: FeatureKey, map: FeatureMap) -> Result<()> {
        if let Some(dir) = &self.disk {
            if !self.on_disk.contains(&key) {
                write_map(&dir.join(key.file_name()), &key, &map)?;
                self.on_disk.insert(key.clone());
            }
        }
        self.remember(key, map);
        Ok(())
    }

    fn remember(&mut self, key: FeatureKey, map: FeatureMap) {
        self.clock += 1;
        let size = map_bytes(&map);
        if let Some(old) = self.entries.remove(&key) {
            self.bytes -= map_bytes(&old.map);
        }
        while self.bytes + size > self.budget {
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(gone) = self.entries.remove(&oldest) {
                self.bytes -= map_bytes(&gone.map);
            }
        }
        // A map larger than the whole budget is not kept in memory (it may still be on disk).
        if size <= self.budget {
            self.bytes += size;
            self.entries.insert(
                key,
                Entry {
                    map,
                    last_used: self.clock,
                },
            );
        }
    }

    /// The (t, tap) pairs held (in memory or on disk) for keys that differ from `key` only in t and tap.
    pub fn computed_variants(&self, key: &FeatureKey) -> HashSet<(usize, String)> {
        self.entries
            .keys()
            .chain(self.on_disk.iter())
            .filter(|k| k.same_but_t_and_tap(key))
            .map(|k| (k.t, k.tap.clone()))
            .collect()
    }
}

/// Of the `(t, tap)` pairs computed for every one of `keys` (which differ only in image), the one
/// nearest to what they ask: the same tap at the nearest t, else the nearest t at the tap nearest
/// in `tap_order` (the model's forward order). None when nothing usable is cached.
pub fn nearest_computed(
    cache: &FeatureCache,
    keys: &[FeatureKey],
    tap_order: &[String],
) -> Option<(usize, String)> {
    let first = keys.first()?;
    let mut common = cache.computed_variants(first);
    for key in &keys[1..] {
        let mine = cache.computed_variants(key);
        common.retain(|v| mine.contains(v));
    }
    let position = |tap: &str| tap_order.iter().position(|n| n == tap);
    let wanted = position(&first.tap);
    common.into_iter().min_by_key(|(t, tap)| {
        let tap_distance = match (position(tap), wanted) {
            _ if *tap == first.tap => 0,
            (Some(a), Some(b)) => a.abs_diff(b),
            _ => usize::MAX,
        };
        (tap_distance, t.abs_diff(first.t), *t, tap.clone())
    })
}

fn read_key(path: &Path) -> Option<FeatureKey> {
    let meta = read_metadata(path, 1 << 20).ok()?;
    FeatureKey::from_fields(&meta)
}

fn read_map(path: &Path) -> Result<FeatureMap> {
    let bytes = std::fs::read(path).with_path(path)?;
    let tensors = safetensors::SafeTensors::deserialize(&bytes).with_path(path)?;
    let view = tensors
        .tensor("features")
        .map_err(|e| Error::file(path, format!("cached features: {e}")))?;
    let (dtype, shape) = (view.dtype(), view.shape().to_vec());
    let [c, h, w] = shape[..] else {
        return Err(Error::file(
            path,
            format!("cached features have shape {shape:?}, not [C,h,w]"),
        ));
    };
    if dtype != safetensors::Dtype::F32 {
        return Err(Error::file(
            path,
            format!("cached features are {dtype:?}, not F32"),
        ));
    }
    let data: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    FeatureMap::new(c, h, w, data).map_err(|e| Error::file(path, e.to_string()))
}

fn write_map(path: &Path, key: &FeatureKey, map: &FeatureMap) -> Result<()> {
    let shape = [map.channels, map.height, map.width];
    let metadata = key.fields().into_iter().collect();
    write_f32(path, [("features", &shape[..], &map.data[..])], metadata)
}

/// A map that keeps at most `capacity` values, dropping the least recently used.
pub struct BoundedCache<K, V> {
    entries: HashMap<K, (V, u64)>,
    capacity: usize,
    clock: u64,
}

impl<K: Eq + Hash + Clone, V: Clone> BoundedCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    pub fn get(&mut self, key: &K) -> Option<V> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|(v, used)| {
            *used = clock;
            v.clone()
        })
    }

    pub fn insert(&mut self, key: K, value: V) {
        self.clock += 1;
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, (value, self.clock));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keys held, in no order.
    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: usize, tap: &str) -> FeatureKey {
        FeatureKey {
            model: "m".into(),
            image: 7,
            size: Some((64, 64)),
            t,
            tap: tap.into(),
            ensemble: 1,
            seed: 0,
            prompt: String::new(),
        }
    }

    fn map(values: usize, fill: f32) -> FeatureMap {
        FeatureMap::new(values, 1, 1, vec![fill; values]).unwrap()
    }

    #[test]
    fn least_recently_used_leaves_first() {
        // Budget for two 4-float maps.
        let mut cache = FeatureCache::new(32);
        cache.insert(key(1, "a"), map(4, 1.0)).unwrap();
        cache.insert(key(2, "a"), map(4, 2.0)).unwrap();
        assert!(cache.get(&key(1, "a")).unwrap().is_some()); // 1 is now more recent than 2
        cache.insert(key(3, "a"), map(4, 3.0)).unwrap();
        assert!(cache.contains(&key(1, "a")));
        assert!(!cache.contains(&key(2, "a")));
        assert!(cache.contains(&key(3, "a")));
        assert_eq!(cache.bytes(), 32);
        // A map larger than the budget is not kept, and evicts nothing it cannot replace.
        cache.insert(key(4, "a"), map(16, 4.0)).unwrap();
        assert!(!cache.contains(&key(4, "a")));
        assert!(cache.bytes() <= cache.budget());
    }

    #[test]
    fn disk_cache_survives_a_new_cache() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<f32> = (0..24).map(|i| i as f32 * 0.5 - 3.0).collect();
        let original = FeatureMap::new(2, 3, 4, data).unwrap();
        {
            let mut cache = FeatureCache::with_disk(1 << 20, dir.path()).unwrap();
            cache
                .insert(key(261, "up_blocks.1"), original.clone())
                .unwrap();
        }
        // A foreign file in the folder is ignored.
        std::fs::write(dir.path().join("junk.safetensors"), b"not a tensor file").unwrap();
        let mut cache = FeatureCache::with_disk(1 << 20, dir.path()).unwrap();
        assert!(cache.is_empty());
        assert!(cache.contains(&key(261, "up_blocks.1")));
        let back = cache.get(&key(261, "up_blocks.1")).unwrap().unwrap();
        assert_eq!(back, original);
        assert_eq!(cache.len(), 1);
        assert!(cache.get(&key(262, "up_blocks.1")).unwrap().is_none());
    }

    #[test]
    fn a_damaged_disk_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut cache = FeatureCache::with_disk(1 << 20, dir.path()).unwrap();
            cache.insert(key(5, "mid_block"), map(3, 1.0)).unwrap();
        }
        let mut cache = FeatureCache::with_disk(1 << 20, dir.path()).unwrap();
        let path = dir.path().join(key(5, "mid_block").file_name());
        // Keep the header, cut the data.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        let err = cache.get(&key(5, "mid_block")).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(!cache.contains(&key(5, "mid_block")));
    }

    #[test]
    fn nearest_prefers_the_same_tap_then_the_nearest_tap() {
        let order: Vec<String> = ["down_blocks.0", "mid_block", "up_blocks.0", "up_blocks.1"]
            .map(String::from)
            .to_vec();
        let mut cache = FeatureCache::new(1 << 20);
        let other_image = |k: FeatureKey| FeatureKey { image: 8, ..k };
        for k in [
            key(100, "up_blocks.1"),
            key(300, "up_blocks.1"),
            key(250, "mid_block"),
        ] {
            cache.insert(k.clone(), map(2, 0.0)).unwrap();
            cache.insert(other_image(k), map(2, 0.0)).unwrap();
        }
        // Only image 7 has t=250 at up_blocks.0.
        cache.insert(key(250, "up_blocks.0"), map(2, 0.0)).unwrap();
        let asked = [
            key(261, "up_blocks.1"),
            other_image(key(261, "up_blocks.1")),
        ];
        assert_eq!(
            nearest_computed(&cache, &asked, &order),
            Some((300, "up_blocks.1".into()))
        );
        let asked = [
            key(250, "up_blocks.0"),
            other_image(key(250, "up_blocks.0")),
        ];
        // up_blocks.0 at 250 is there for one image only; of the rest, up_blocks.1 and mid_block are
        // one step away in forward order; mid_block has the same t.
        assert_eq!(
            nearest_computed(&cache, &asked, &order),
            Some((250, "mid_block".into()))
        );
        let mut other_seed = key(261, "up_blocks.1");
        other_seed.seed = 1;
        assert_eq!(nearest_computed(&cache, &[other_seed], &order), None);
    }

    #[test]
    fn bounded_cache_drops_the_least_recently_used() {
        let mut c = BoundedCache::new(2);
        c.insert("a", 1);
        c.insert("b", 2);
        assert_eq!(c.get(&"a"), Some(1));
        c.insert("c", 3);
        assert_eq!(c.get(&"b"), None);
        assert_eq!(c.get(&"a"), Some(1));
        assert_eq!(c.len(), 2);
    }
}
