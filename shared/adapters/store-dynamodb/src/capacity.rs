//! What DynamoDB bills, computed from item sizes (DynamoDB Local's own figures are not the bill:
//! it counts a transactional write as one unit per item; real DynamoDB bills two per KB).

use std::collections::HashMap;
use std::sync::Mutex;

use aws_sdk_dynamodb::types::AttributeValue;

/// The size DynamoDB bills an item at: attribute names plus values, by the documented rules.
pub fn item_size_bytes(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(name, value)| name.len() + value_size_bytes(value)).sum()
}

fn value_size_bytes(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(s) => s.len(),
        // Numbers: about one byte per two significant digits, plus one.
        AttributeValue::N(n) => {
            let digits = n.trim_start_matches('-').chars().filter(char::is_ascii_digit).count();
            digits.div_ceil(2) + 1
        }
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(values) => values.iter().map(String::len).sum(),
        AttributeValue::Ns(values) => {
            values.iter().map(|n| value_size_bytes(&AttributeValue::N(n.clone()))).sum()
        }
        AttributeValue::Bs(values) => values.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::M(map) => {
            3 + map.iter().map(|(k, v)| k.len() + value_size_bytes(v) + 1).sum::<usize>()
        }
        AttributeValue::L(list) => 3 + list.iter().map(|v| value_size_bytes(v) + 1).sum::<usize>(),
        _ => 0,
    }
}

/// Billed write units, in tenths so they add up exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    /// PutItem / UpdateItem / DeleteItem / BatchWriteItem: 1 unit per KB.
    Standard,
    /// An item inside TransactWriteItems: 2 units per KB.
    Transactional,
}

pub fn write_units(size_bytes: usize, kind: WriteKind) -> u64 {
    let kilobytes = size_bytes.div_ceil(1024).max(1) as u64;
    match kind {
        WriteKind::Standard => kilobytes,
        WriteKind::Transactional => 2 * kilobytes,
    }
}

/// Strongly consistent reads: 1 unit per 4 KB (transactional reads would be 2).
pub fn read_units(size_bytes: usize) -> u64 {
    size_bytes.div_ceil(4096).max(1) as u64
}

/// Counts billed units per partition key. Off unless the store is built with one (benchmarks).
#[derive(Debug, Default)]
pub struct CapacityMeter {
    inner: Mutex<MeterState>,
}

#[derive(Debug, Default, Clone)]
pub struct MeterState {
    pub write_units: u64,
    pub read_units: u64,
    pub write_units_by_key: HashMap<String, u64>,
    /// How many writes each key took: a key written once (a page, a marker) adds no
    /// sustained load to its partition; the per-second limit bites on keys written repeatedly.
    pub writes_by_key: HashMap<String, u64>,
    /// What DynamoDB (Local) reported through ReturnConsumedCapacity, for comparison.
    pub reported_write_units: f64,
    pub transactions: u64,
}

impl MeterState {
    /// The key with the most units among keys written more than once (sustained load), and
    /// its units; `None` if every key was written once.
    pub fn hottest_repeated_key(&self) -> Option<(&str, u64)> {
        self.write_units_by_key
            .iter()
            .filter(|(key, _)| self.writes_by_key.get(*key).copied().unwrap_or(0) > 1)
            .max_by_key(|(_, units)| **units)
            .map(|(key, units)| (key.as_str(), *units))
    }

    /// The largest number of units any single key took over the run (a burst).
    pub fn largest_key_units(&self) -> u64 {
        self.write_units_by_key.values().copied().max().unwrap_or(0)
    }
}

impl CapacityMeter {
    pub fn record_write(&self, partition_key: &str, units: u64) {
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        state.write_units += units;
        *state.write_units_by_key.entry(partition_key.to_string()).or_default() += units;
        *state.writes_by_key.entry(partition_key.to_string()).or_default() += 1;
    }

    pub fn record_read(&self, units: u64) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).read_units += units;
    }

    pub fn record_reported(&self, write_units: f64, transaction: bool) {
        let mut state = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        state.reported_write_units += write_units;
        if transaction {
            state.transactions += 1;
        }
    }

    pub fn take(&self) -> MeterState {
        std::mem::take(&mut *self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_dynamodb_rules() {
        let item = HashMap::from([
            ("pk".to_string(), AttributeValue::S("A#x".into())),
            ("n".to_string(), AttributeValue::N("12345".into())),
        ]);
        assert_eq!(item_size_bytes(&item), 2 + 3 + 1 + 3 + 1);
        assert_eq!(write_units(1024, WriteKind::Standard), 1);
        assert_eq!(write_units(1025, WriteKind::Standard), 2);
        assert_eq!(write_units(10, WriteKind::Transactional), 2);
        assert_eq!(write_units(3000, WriteKind::Transactional), 6);
        assert_eq!(read_units(4096), 1);
        assert_eq!(read_units(4097), 2);
    }
}
